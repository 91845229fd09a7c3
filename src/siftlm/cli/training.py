"""Training verbs: finetune on a selection, dpo, and the DPO length analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from siftlm.cli.common import DATA, MODEL, analyze_app, app, console, out_option, show, show_counts
from siftlm.config import (
    DataConfig,
    DPOTrainConfig,
    SignalConfig,
    TrainConfig,
)
from siftlm.data.write import rejects_by_reason
from siftlm.options import verb

FINETUNE_DEFAULTS = {"epochs": (3, "the usual SFT schedule (Alpaca's); a reference run keeps 2")}


@verb(app, configs={"sig": SignalConfig, "tcfg": TrainConfig, "src": DataConfig}, defaults=FINETUNE_DEFAULTS)
def finetune(data: Optional[Path] = DATA, model: str = MODEL, out: Path = out_option("siftlm-finetune"),
             selection: Optional[Path] = typer.Option(None, help="train on these ids of DATA (a selection.parquet)"), *,
             sig: SignalConfig, tcfg: TrainConfig, src: DataConfig):
    """Fine-tune on a selection (selected.jsonl, or DATA restricted to --selection); the model is OUT/final."""
    from siftlm.recipes.finetune import run_finetune

    info, prep = run_finetune(data, model, out, sig, tcfg, src=src, selection=selection)
    show_counts(prep.counts(), rejects_by_reason(prep.rejects))
    show(f"finetuned -> {info['final']}", [("examples", info["examples"]), ("tokens", info["tokens"]),
                                            ("epochs", info["epochs"]), ("fingerprint", info["fingerprint"])])


@verb(app, configs={"sig": SignalConfig, "dcfg": DPOTrainConfig, "src": DataConfig})
def dpo(data: Optional[Path] = DATA, model: str = typer.Option("builtin:smollm2", help="the policy's start, also the reference"),
        out: Path = out_option("siftlm-dpo"), *, sig: SignalConfig, dcfg: DPOTrainConfig, src: DataConfig):
    """DPO through TRL's trainer (LoRA by default), reference log-probs from siftlm's cached pair pass."""
    from siftlm.recipes.dpo import run_dpo

    prep, summary = run_dpo(data, model, out, sig, dcfg, src=src)
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    show(f"dpo --loss {dcfg.loss}: {len(prep.encoded)} pairs -> {summary['final']}",
         [(f"pairs {k}", v) for k, v in prep.counts().items()] + [("beta", f"{summary['beta']:.4g}"),
         ("steps logged", len(losses))] + ([("first / last loss", f"{losses[0]:.4f} / {losses[-1]:.4f}")] if losses else [])
         + [("train runtime", f"{summary['metrics'].get('train_runtime', float('nan')):.1f} s")])


@verb(analyze_app, "dpo-length", configs={"sig": SignalConfig, "src": DataConfig})
def dpo_length(data: Optional[Path] = DATA,
               adapter: Path = typer.Option(..., help="the trained policy's adapter (e.g. siftlm-dpo/final)"),
               model: str = typer.Option("builtin:smollm2", help="the reference model the adapter was trained on"),
               beta: float = typer.Option(0.1, help="beta of TRL's loss types"),
               davir_beta: Optional[float] = typer.Option(None, help="beta of davir (default as in training: 0.1 x "
                                                          "median |log pi_ref(y|x)|)"),
               out: Path = out_option("siftlm-dpo-length"), *, sig: SignalConfig, src: DataConfig):
    """Correlation of each DPO loss type's per-pair objective with the response-length difference (DavIR Table 3)."""
    from siftlm.recipes.dpo_length import analyze_dpo_length

    table = analyze_dpo_length(data, str(adapter), model, out, sig, beta=beta, davir_beta=davir_beta, src=src)
    show(f"DPO objective vs response-length difference: {table['n_pairs'].max()} pairs (DavIR Table 3)",
         [(r["loss"], f"{r['pearson']:+.3f}", f"{r['spearman']:+.3f}", f"{r['mean_objective']:.4g}", f"{r['beta']:.4g}")
          for _, r in table.iterrows()], ("loss", "pearson", "spearman", "mean objective", "beta"))
    console.print(f"-> {out / 'report.html'}, {out / 'dpo_length.json'}, {out / 'dpo_length.png'}, {out / 'pairs.parquet'}")

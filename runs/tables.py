"""Markdown for docs/experiments.md and the README from committed grid results (results.json), so no number in the
docs is copied by hand:

    python runs/tables.py behaviour clean-filter         # each grid's primary table, then its secondary metrics
    python runs/tables.py --averages clean clean-25      # held-out loss per token beside per item, verdict by verdict
    python runs/tables.py --readme clean noisy-filter    # the README's summary: each grid's primary comparisons
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "runs" / "results"
SECONDARY = ("loss_per_token", "loss_per_item", "refusal", "wrong_language", "repetition", "prop_refusal",
             "prop_foreign", "words")


def _budget(b, unit) -> str:
    if b is None:
        return "all"
    text = f"{100 * b:g} %" if b <= 1 else f"{b:g}"
    return text + {"tokens": " of tokens", "response": " of response tokens"}.get(unit, "")


def _num(v, digits=0) -> str:
    return "–" if v is None or v != v else f"{v:,.{digits}f}"


def _ci(v, k) -> str:
    return f"{v['diff']:+.{k}f} [{v['low']:+.{k}f}, {v['high']:+.{k}f}]"


def primary_table(res: dict) -> str:
    t = res["tables"][0]
    k = t["digits"]
    lines = ["| method | budget | seeds | examples | prompt tok | response tok | steps | "
             f"{t['label']} (mean ± sd) | minus random [95 % CI] | verdict | BH q |", "|---|" * 1 + "---|" * 10]
    for r in t["rows"]:
        head = (f"| {r['method']} | {_budget(r['budget'], r['unit'])} | {r['seeds']} | {_num(r['selected'])} | "
                f"{_num(r['prompt_tokens'])} | {_num(r['response_tokens'])} | {_num(r['steps'])} | "
                f"{r['value']:.{k}f} ± {r['seed_sd']:.{k}f} |")
        if not r["vs_random"]:
            lines.append(head + " | | |")
        for v in r["vs_random"]:
            bold = f"**{v['verdict']}**" if v["verdict"] != "no difference detected" else v["verdict"]
            bh = "" if v["verdict"] == "no difference detected" else (" (survives)" if v["survives_bh"] else " (not after BH)")
            lines.append(head + f" {_ci(v, k)} | {bold} | {v['q']:.3f}{bh} |")
    base = t.get("base_model")
    tail = f"\n\nBase model without fine-tuning: {base:.{k}f}." if base is not None else ""
    return "\n".join(lines) + tail


def secondary_table(res: dict) -> str:
    """Every secondary metric's difference from random per method (one row per method and budget)."""
    tables = [t for t in res["tables"][1:] if t["metric"] in SECONDARY]
    cols = [(t["metric"], "+".join(t["sets"])) for t in tables]
    rows: dict = {}
    for t in tables:
        for r in t["rows"]:
            for v in r["vs_random"]:
                key = (r["method"], _budget(r["budget"], r["unit"]) if r["budget"] is not None
                       else "all vs " + _budget(v["budget"], v["unit"]))
                mark = {"better": " ↓", "worse": " ↑", "higher": " ↑", "lower": " ↓"}.get(v["verdict"], "")
                if t["lower_is_better"] is False:
                    mark = {"better": " ↑", "worse": " ↓"}.get(v["verdict"], "")
                star = "*" if v["survives_bh"] else ""
                rows.setdefault(key, {})[(t["metric"], "+".join(t["sets"]))] = f"{v['diff']:+.{t['digits']}f}{mark}{star}"
    head = "| method | budget | " + " | ".join(f"{m} ({s})" for m, s in cols) + " |"
    lines = [head, "|---|---|" + "---|" * len(cols)]
    for (method, budget), vals in rows.items():
        lines.append(f"| {method} | {budget} | " + " | ".join(vals.get(c, "") for c in cols) + " |")
    return "\n".join(lines)


def averages_table(grids: list[str]) -> str:
    """Held-out loss per token (the primary) beside per item, for every comparison on the held-out split."""
    lines = ["| grid | method | budget | per token: minus random [CI] | verdict | BH q | per item: minus random [CI] | "
             "verdict |", "|---|---|---|---|---|---|---|---|"]
    for g in grids:
        res = json.loads((RESULTS / g / "results.json").read_text())
        by = {t["metric"]: t for t in res["tables"] if t["sets"] == ["heldout"]}
        if "loss_per_token" not in by or "loss_per_item" not in by:
            continue
        items = {(r["method"], r["budget"], r["unit"], v["budget"]): v for r in by["loss_per_item"]["rows"]
                 for v in r["vs_random"]}
        for r in by["loss_per_token"]["rows"]:
            for v in r["vs_random"]:
                w = items.get((r["method"], r["budget"], r["unit"], v["budget"]))
                budget = _budget(r["budget"], r["unit"]) if r["budget"] is not None else "all vs " + _budget(
                    v["budget"], v["unit"])
                changed = " ≠" if w and w["verdict"] != v["verdict"] else ""
                lines.append(f"| {g} | {r['method']} | {budget} | {_ci(v, 4)} | {v['verdict']} | {v['q']:.3f} | "
                             f"{_ci(w, 4) if w else ''} | {w['verdict'] if w else ''}{changed} |")
    return "\n".join(lines)


def extras(g: str, res: dict) -> str:
    """A targeted grid's feature costs (pool/feature-costs.json) and each selection's share of the pool's sources."""
    out = []
    costs = RESULTS / g / "pool" / "feature-costs.json"
    if costs.exists():
        c = json.loads(costs.read_text())
        out.append("Feature passes (computed once, shared by every cell that uses them): " + "; ".join(
            f"{name} {v['seconds']:.0f} s (process peak RSS ≤ {v['process_peak_rss_gb']:.1f} GB)"
            for name, v in sorted(c.items())) + ".")
    labels, cells = RESULTS / g / "pool" / "labels.parquet", RESULTS / g / "cells.parquet"
    if labels.exists() and cells.exists():
        import pandas as pd

        kinds = pd.read_parquet(labels).set_index("id")["kind"]
        if (kinds != "clean").any():
            c = pd.read_parquet(cells)
            c = c[c["method"] != "base model"]
            order = ["clean"] + sorted(set(kinds) - {"clean"})
            lines = ["| selection | cells | " + " | ".join(order) + " |", "|---|---|" + "---|" * len(order)]
            lines.append("| pool | | " + " | ".join(str(int((kinds == k).sum())) for k in order) + " |")
            for method, group in c.groupby("method", sort=False):
                counts = [kinds.reindex(list(ids)).value_counts() for ids in group["ids"]]
                mean = pd.concat(counts, axis=1).fillna(0).mean(axis=1)
                lines.append(f"| {method} | {len(group)} | " + " | ".join(f"{mean.get(k, 0):.1f}" for k in order) + " |")
            out.append("Examples of each kind in the selections (mean over cells):\n\n" + "\n".join(lines))
    shares = res.get("source_shares") or []
    if shares:
        cols = sorted({k for r in shares for k in r if k.startswith("share:")})
        out.append("| selection | " + " | ".join(c[6:] for c in cols) + " |\n|---|" + "---|" * len(cols) + "\n" +
                   "\n".join(f"| {r['method']} | " + " | ".join(f"{100 * r.get(c, 0):.0f} %" for c in cols) + " |"
                             for r in shares))
    return "\n\n".join(out)


def readme_table(grids: list[str]) -> str:
    """The README's summary: every grid's primary comparisons (one row per method and budget), with its q-value."""
    lines = ["| grid (primary endpoint) | method | budget | minus random [95 % CI] | verdict | BH q |",
             "|---|---|---|---|---|---|"]
    for g in grids:
        res = json.loads((RESULTS / g / "results.json").read_text())
        t, p = res["tables"][0], res["primary"]
        label = f"`{g}` ({p['metric']}, {'+'.join(p['sets'])}{'' if p['declared'] else ', not declared'})"
        for r in t["rows"]:
            for v in r["vs_random"]:
                budget = _budget(r["budget"], r["unit"]) if r["budget"] is not None else "all vs " + _budget(
                    v["budget"], v["unit"])
                verdict = v["verdict"] if v["verdict"] == "no difference detected" else (
                    f"**{v['verdict']}**" + ("" if v["survives_bh"] else " (not after BH)"))
                lines.append(f"| {label} | {r['method']} | {budget} | {_ci(v, t['digits'])} | {verdict} | "
                             f"{v['q']:.3f} |")
                label = ""
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("grids", nargs="+")
    ap.add_argument("--averages", action="store_true")
    ap.add_argument("--readme", action="store_true", help="the README's summary of every grid's primary comparisons")
    a = ap.parse_args()
    if a.readme:
        print(readme_table(a.grids))
        return
    if a.averages:
        print(averages_table(a.grids))
        return
    for g in a.grids:
        res = json.loads((RESULTS / g / "results.json").read_text())
        p = res["primary"]
        print(f"#### {g}: primary {p['metric']} on {' + '.join(p['sets'])}"
              f"{' (declared before the run)' if p['declared'] else ' (default, not declared)'}\n")
        print(primary_table(res) + "\n")
        print("Secondary metrics, minus random (↓ / ↑: CI excludes 0, lower / higher; *: survives BH):\n")
        print(secondary_table(res) + "\n")
        if extra := extras(g, res):
            print(extra + "\n")


if __name__ == "__main__":
    main()

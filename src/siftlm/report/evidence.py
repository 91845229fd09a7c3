"""What siftlm's own benchmarks say about a score, for every report: the noisy-pool AUROCs (does the score keep
injected junk out?) and the clean grid's comparison with random (does its selection train a better model?).

The findings ship with the package (``evidence.json``, written by ``runs/evidence.py`` from the committed results of
``runs/grids/``), so a user's report shows them beside the selection without any run of ours on their machine.
They are measurements on small models and pools; the report says so, with the setting they come from.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path

from siftlm.report.html import table

FILE = Path(__file__).with_name("evidence.json")


@lru_cache(maxsize=1)
def load() -> dict:
    return json.loads(FILE.read_text()) if FILE.exists() else {}


def _method_names(by: str, method: str = "topk") -> list[str]:
    """The grid methods that select by ``by`` (highest/lowest top-k, per cluster, as DPP quality)."""
    if method == "dpp":
        return [f"{by}+dpp"]
    return [f"highest:{by}", f"lowest:{by}", f"cluster:{by}"]


def for_score(by: str, method: str = "topk") -> dict:
    """{"auroc": {kind: value}, "grid": [rows of the clean grid for methods by this score], "setting", "advice"}."""
    ev = load()
    if not ev:
        return {}
    auroc = {name: v for name, v in ev.get("noisy", {}).get("auroc", {}).items() if name == by}
    names = _method_names(by, method)
    grid = [r for r in ev.get("clean", {}).get("rows", []) if r["method"] in names]
    noisy_grid = [r for r in ev.get("noisy_cells", {}).get("rows", []) if r["method"] in names]
    acts = [r for r in ev.get("behaviour", {}).get("rows", []) if r["method"] in names]
    return {"score": by, "auroc": auroc.get(by), "grid": grid, "noisy_grid": noisy_grid, "behaviour": acts,
            "lead": ev.get("leads", {}).get(by, ""), "setting": ev.get("setting", ""), "advice": ev.get("advice", ""),
            "noisy_setting": ev.get("noisy", {}).get("setting", ""),
            "clean_setting": ev.get("clean", {}).get("setting", ""),
            "noisy_cells_setting": ev.get("noisy_cells", {}).get("setting", ""),
            "behaviour_setting": ev.get("behaviour", {}).get("setting", "")}


LOSS = "loss_per_token"     # the endpoint every one-line loss claim rests on


def line(by: str, method: str = "topk") -> str:
    """One sentence for the CLI."""
    e = for_score(by, method)
    if not e:
        return ""
    parts = []
    if e["auroc"]:
        parts.append(f"keeps clean over injected junk with AUROC {e['auroc']['all']:.2f} (0.5 = chance, below it "
                     "prefers junk)")
    for rows, where in ((e["grid"], "the clean grids"), (e["noisy_grid"], "the noisy pool's fine-tunes")):
        verdicts = sorted({f"{r['method']} at {r['budget']} {r['verdict']}" for r in rows
                           if r["set"] == "heldout" and r.get("metric", LOSS) == LOSS})
        if verdicts:
            parts.append(f"against random in {where} (held-out loss per token): {', '.join(verdicts)}")
    head = f"benchmarks on {by}: " + ("; ".join(parts) if parts else "not measured")
    return (f"{e['lead']} " if e.get("lead") else "") + head


def section(by: str, method: str = "topk") -> str:
    """The report's box: what the benchmarks measured for this score, and siftlm's advice."""
    e = for_score(by, method)
    if not e:
        return ""
    esc = html.escape
    out = [f"<h2>What siftlm's benchmarks say about {esc(by)}</h2>"]
    if e.get("lead"):
        out.append(f"<p><b>{esc(e['lead'])}</b></p>")
    if e["auroc"]:
        kinds = ", ".join(f"{esc(k)} {v:.2f}" for k, v in e["auroc"].items() if k != "all")
        out.append(f"<p>Noisy pool ({esc(e['noisy_setting'])}): AUROC of clean vs injected junk in this score's "
                   f"selection order <b>{e['auroc']['all']:.2f}</b> (1 = junk always ranked last, 0.5 = chance); by "
                   f"kind: {kinds}.</p>")
    for rows, title, setting in ((e["behaviour"], "What the fine-tuned models did", e.get("behaviour_setting", "")),
                                 (e["grid"], "Clean grids", e["clean_setting"]),
                                 (e["noisy_grid"], "Fine-tunes on the noisy pool", e["noisy_cells_setting"])):
        if not rows:
            continue
        cells = [[r["method"], r["budget"], r["set"], r.get("metric", LOSS) + (" (primary)" if r.get("primary") else ""),
                  f"{r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]", r["verdict"],
                  "" if "q" not in r else f"{r['q']:.3f}"] for r in rows]
        out.append(f"<p>{title} ({esc(setting)}): the fine-tuned model's metric minus random's at the same budget "
                   "(95 % CI over seeds, subsets and items; losses and rates: lower is better; propensities: higher "
                   "is better; q: Benjamini-Hochberg over the grid):</p>"
                   + table(["method", "budget", "eval set", "metric", "minus random", "verdict", "BH q"], cells))
    if e["advice"]:
        out.append(f"<p>Across every grid: {esc(e['advice'])}</p>")
    out.append(f"<p>Measured on small models and pools ({esc(e['setting'])}); your data and model may differ. "
               "The tables and their per-item data: docs/experiments.md.</p>")
    return "".join(out)


def for_target(method: str) -> dict:
    """What the targeted grids measured for ``siftlm run --target --target-method METHOD`` (its grid name is
    METHOD->query): {"lead", "rows", "setting", "kind": "targeted"}."""
    ev = load().get("targeted", {})
    name = f"{method}->query"
    return {"kind": "targeted", "method": method, "lead": ev.get("leads", {}).get(method, ""),
            "rows": [r for r in ev.get("rows", []) if r["method"] == name], "setting": ev.get("setting", "")}


def target_line(method: str) -> str:
    e = for_target(method)
    return e["lead"] or f"siftlm's targeted grids have not measured --target-method {method}."


def target_section(method: str) -> str:
    """The report's box for a targeted selection."""
    e = for_target(method)
    esc = html.escape
    out = [f"<h2>What siftlm's benchmarks say about targeted selection ({esc(method)})</h2>",
           f"<p><b>{esc(target_line(method))}</b></p>"]
    if e["rows"]:
        cells = [[r["method"], r["budget"], r["set"], r["metric"] + (" (primary)" if r.get("primary") else ""),
                  f"{r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]", r["verdict"], f"{r['q']:.3f}"]
                 for r in e["rows"]]
        out.append(f"<p>{esc(e['setting'])}: the fine-tuned model's metric minus random's at the same budget (95 % CI "
                   "over seeds, subsets and items; q: Benjamini-Hochberg over the grid):</p>"
                   + table(["method", "budget", "eval set", "metric", "minus random", "verdict", "BH q"], cells))
    return "".join(out)

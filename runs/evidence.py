"""Write src/siftlm/report/evidence.json (what every report says about its score) from the committed results of the
evidence grids. Run after `siftlm experiment runs/grids/<grid>.yaml --tables-only`:

    python runs/evidence.py
"""

from __future__ import annotations

import json
from pathlib import Path

from siftlm.scores import SCORES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "runs" / "results"
OUT = ROOT / "src" / "siftlm" / "report" / "evidence.json"


def _budget(r: dict) -> str:
    b = r["budget"]
    text = f"{100 * b:g} %" if b is not None and b <= 1 else f"{b:g}"
    return text + (" of the tokens" if r["unit"] == "tokens" else "")


def grid_rows(res: dict) -> list[dict]:
    """One row per method, budget and evaluation set: the difference from random with its CI and verdict."""
    rows = []
    for name, s in res["sets"].items():
        for r in s["rows"]:
            if r["method"] in ("random", "full") or r["budget"] is None:
                continue
            for v in r["vs_random"]:
                rows.append({"method": r["method"], "budget": _budget(r), "set": name, "diff": v["diff"],
                             "low": v["low"], "high": v["high"], "verdict": v["verdict"],
                             "beats_random": v["beats_random"], "train_tokens": r["train_tokens"]})
    return rows


def _named(rows: list[dict], verdict: str) -> list[str]:
    return sorted({f"{r['method']} at {r['budget']}" for r in rows if r["verdict"] == verdict and r["set"] == "heldout"})


def full_rows(res: dict) -> list[dict]:
    """The whole pool's fine-tune against random subsets, per evaluation set."""
    return [{"set": name, "examples": r["selected"], "budget": _budget(v), "diff": v["diff"], "low": v["low"],
             "high": v["high"], "verdict": v["verdict"]}
            for name, s in res["sets"].items() for r in s["rows"] if r["method"] == "full" for v in r["vs_random"]]


def advice(clean: list[dict], noisy: list[dict], auroc: dict, full: list[dict] = ()) -> str:
    """siftlm's advice, from the verdicts (never from the sign of a point estimate) and the AUROCs."""
    better = _named(clean, "better")
    if better:
        head = (f"In siftlm's clean grid, {'; '.join(better)} trained a better model than random subsets (held-out "
                "loss, CI excluding 0).")
    else:
        head = ("No selection method beat random subsets of the same size in siftlm's clean grid (held-out loss; CIs "
                "over seeds, subsets and items).")
        worse = _named(clean, "worse")
        if worse:
            head += f" Worse than random there, with the CI excluding 0: {'; '.join(worse)}."
    for r in full:
        if r["set"] == "heldout":
            head += (f" Training on the whole pool ({r['examples']:.0f} examples) came out {r['diff']:+.3f} "
                     f"[{r['low']:+.3f}, {r['high']:+.3f}] from a random {r['budget']} subset ({r['verdict']})"
                     + ("; at that scale, the examples a selection drops cost held-out loss." if r["verdict"] == "better"
                        else "."))
    best = max(auroc.items(), key=lambda kv: kv[1]["all"]) if auroc else None
    if best:
        name = best[0]
        keep = "lowest" if SCORES[name].direction == "low" else "highest"
        head += (f" Of the scores, {name} ranks injected junk last best (noisy-pool AUROC {best[1]['all']:.2f}).")
        mine = sorted((r for r in noisy if r["method"] == f"{keep}:{name}" and r["set"] == "heldout"), key=_fraction)
        for r in mine:
            head += (f" As a {r['budget']} selection on the noisy pool it trained a model {r['diff']:+.3f} "
                     f"[{r['low']:+.3f}, {r['high']:+.3f}] from random's held-out loss ({r['verdict']}).")
        small = (f"in the clean grid, {'; '.join(better)} did." if better
                 else "no measured method picks a small subset better than random.")
        head += " " + _filter_advice(keep, name, [r for r in mine if _fraction(r) >= GENEROUS], small)
    return head


GENEROUS = 0.5    # a selection that keeps at least half the pool is a filter, not a pick


def _fraction(r: dict) -> float:
    """A row's budget as a fraction of the pool ('50 %' -> 0.5); an absolute count reads as 0 (not a filter)."""
    text = r["budget"]
    return float(text.split()[0]) / 100 if "%" in text else 0.0


def _filter_advice(keep: str, name: str, generous: list[dict], small: str) -> str:
    """What to do with the best junk-ranking score, from its generous-filter fine-tunes' verdicts (if any ran)."""
    how = f"near-duplicate removal, then keep the {keep} by {name} at a generous budget"

    def at(verdict: str) -> str:
        return ", ".join(r["budget"] for r in generous if r["verdict"] == verdict)

    if at("better"):
        return (f"Use it to filter junk ({how}: at {at('better')} it trained better than random subsets of the same "
                f"size) rather than to pick a small subset: {small}")
    if at("worse"):
        return (f"Even as a generous filter (at {at('worse')}) its selection trained worse than random subsets of the "
                f"same size: dropping the junk did not make up for what it dropped with it. Use it to find junk to inspect or "
                f"remove, and train on a random subset or the whole pool: {small}")
    if generous:
        return (f"As a generous filter (at {', '.join(r['budget'] for r in generous)}) it removes junk but trained a "
                f"model not distinguishable from random subsets of the same size. Use it to find and drop junk "
                f"({how}) if junk matters to you beyond held-out loss, not to pick a small subset: {small}")
    return (f"Use it to filter junk ({how}, e.g. 0.5-0.8; not measured against random at that size) rather than to "
            f"pick a small subset: {small}")


def _draws(res: dict) -> str:
    """How many random subsets and training seeds the grid ran, from its own config."""
    cfg = res["config"]
    return f"{cfg['random_subsets']} random subsets, {len(cfg['seeds'])} seeds per method"


def _read(grid: str) -> dict | None:
    path = RESULTS / grid / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


CLEAN_GRIDS = ("clean", "clean-tokens", "clean-25")    # one pool and its scores, at different budgets
NOISY_CELL_GRIDS = ("noisy-smollm2-cells", "noisy-filter")     # the noisy pool's fine-tunes: a pick and a filter


def _budgets(grid: str, res: dict, first: str = "clean") -> str:
    """The budgets a grid ran, from its own config: '10 % of the tokens: clean-tokens grid' (the first grid of a
    setting is not named)."""
    cfg = res["config"]
    parts = ([f"{100 * b:g} % of the examples" for b in cfg.get("budgets") or []]
             + [f"{100 * b:g} % of the tokens" for b in cfg.get("budget_tokens") or []])
    return "; ".join(parts) + ("" if grid == first else f": {grid} grid")


def build() -> dict:
    """The evidence file's content from the committed results (a test checks the shipped file equals it)."""
    ev: dict = {"setting": "SmolLM2-135M-Instruct with LoRA on alpaca_en_demo pools of 600-700 examples, 2 CPU cores"}
    grids = {g: r for g in CLEAN_GRIDS if (r := _read(g))}
    if "clean" in grids:
        res = grids["clean"]
        pool = res["pool"]
        budgets = "; ".join(_budgets(g, r) for g, r in grids.items())
        ev["clean"] = {"setting": f"{pool['pool']} examples, {pool['heldout']} held out, {_draws(res)} ({budgets})",
                       "rows": [row for r in grids.values() for row in grid_rows(r)],
                       "full": [row for r in grids.values() for row in full_rows(r)]}
    res = _read("noisy-smollm2")
    if res:
        n = res["noise"]
        ev["noisy"] = {"setting": f"{n['scored']} examples, {100 * n['pool_rate']:.0f} % injected junk of 6 kinds",
                       "auroc": n["auroc_scores"], "methods": n["auroc_methods"]}
    grids = {g: r for g in NOISY_CELL_GRIDS if (r := _read(g))}
    if grids:
        res = next(iter(grids.values()))
        budgets = "; ".join(_budgets(g, r, first=NOISY_CELL_GRIDS[0]) for g, r in grids.items())
        ev["noisy_cells"] = {"setting": f"the noisy pool ({res['noise']['scored']} examples, "
                                        f"{100 * res['noise']['pool_rate']:.0f} % junk), held-out loss on clean "
                                        f"held-out examples, {_draws(res)} ({budgets})",
                             "rows": [row for r in grids.values() for row in grid_rows(r)]}
    ev["advice"] = advice(ev.get("clean", {}).get("rows", []), ev.get("noisy_cells", {}).get("rows", []),
                          ev.get("noisy", {}).get("auroc", {}), ev.get("clean", {}).get("full", []))
    return ev


def main() -> None:
    ev = build()
    OUT.write_text(json.dumps(ev, indent=1) + "\n")
    print(f"{OUT}: {ev['advice']}")


if __name__ == "__main__":
    main()

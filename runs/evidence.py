"""Write src/siftlm/report/evidence.json (what every report says about its score) from the committed results of the
evidence grids. Run after `siftlm experiment runs/grids/<grid>.yaml --tables-only`:

    python runs/evidence.py

Every claim rests on a verdict (a CI excluding 0), never on the sign of a point estimate. Loss claims use held-out
loss per token (``LOSS``, the clean grids' endpoint); a claim about what a model *does* (refusals, answers in another
language, loops) is made only from a grid that measured it (``behaviour`` rows), with its numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.scores import SCORES
from siftlm.stats import two_level_difference

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "runs" / "results"
OUT = ROOT / "src" / "siftlm" / "report" / "evidence.json"
LOSS = "loss_per_token"
KEPT_METRICS = ("loss_per_token", "loss_per_item")            # of the loss-only grids
BEHAVIOUR_METRICS = ("refusal", "wrong_language", "repetition", "prop_refusal", "prop_foreign")
BEHAVIOUR_WORDS = {"refusal": "refused", "wrong_language": "answered in another language",
                   "repetition": "looped"}
CLEAN_GRIDS = ("clean", "clean-tokens", "clean-25", "clean-response", "clean-filter")   # one pool, its scores
NOISY_CELL_GRIDS = ("noisy-smollm2-cells", "noisy-filter", "noisy-behaviour")          # the 19 % noisy pool
BEHAVIOUR_GRID = "behaviour"
TARGETED_GRIDS = ("targeted-alpaca-eval", "targeted-minority")                     # selection toward a query set
TARGET_METHODS = ("repr", "less", "nearest")                                      # --target-method -> "<m>->query"
GENEROUS = 0.5    # a selection that keeps at least half the pool is a filter, not a pick


def _budget(b, unit: str) -> str:
    if b is None:
        return "all"
    text = f"{100 * b:g} %" if b <= 1 else f"{b:g}"
    return text + {"tokens": " of the tokens", "response": " of the response tokens"}.get(unit, "")


def grid_rows(res: dict, metrics=KEPT_METRICS) -> list[dict]:
    """One row per method, budget, evaluation set and metric (the primary table and ``metrics``): the method's mean,
    random's, the difference with its CI, verdict and BH q-value. ``full`` rows say which random budget they face."""
    rows = []
    for t in res["tables"]:
        if not (t["primary"] or t["metric"] in metrics):
            continue
        random = {(r["budget"], r["unit"]): r["value"] for r in t["rows"] if r["method"] == "random"}
        for r in t["rows"]:
            for v in r["vs_random"]:
                rows.append({"method": r["method"], "budget": _budget(r["budget"], r["unit"]) if r["budget"] is not None
                             else _budget(v["budget"], v["unit"]), "set": "+".join(t["sets"]), "metric": t["metric"],
                             "primary": t["primary"], "value": r["value"], "random": random.get((v["budget"], v["unit"])),
                             "diff": v["diff"], "low": v["low"], "high": v["high"], "verdict": v["verdict"],
                             "q": v["q"], "survives_bh": v["survives_bh"], "beats_random": v["beats_random"],
                             "examples": r["selected"], "train_tokens": r["train_tokens"],
                             "response_tokens": r.get("response_tokens")})
    return rows


def _loss(rows: list[dict]) -> list[dict]:
    """The held-out loss-per-token rows of selections (not the whole pool)."""
    return [r for r in rows if r["set"] == "heldout" and r["metric"] == LOSS and r["method"] != "full"]


def _named(rows: list[dict], verdict: str) -> list[str]:
    """'method at budget' for each loss row with ``verdict``, marked when the verdict does not survive BH."""
    return sorted({f"{r['method']} at {r['budget']}" + ("" if r.get("survives_bh", True) else " (not after BH)")
                   for r in _loss(rows) if r["verdict"] == verdict})


def _fraction(r: dict) -> float:
    """A row's budget as a fraction of the pool ('50 %' -> 0.5); an absolute count or a token budget reads as 0."""
    text = r["budget"]
    return float(text.split()[0]) / 100 if text.endswith("%") else 0.0


def _ci(r: dict, digits: int = 3) -> str:
    return f"{r['diff']:+.{digits}f} [{r['low']:+.{digits}f}, {r['high']:+.{digits}f}]"


def _rate(v: float) -> str:
    return f"{100 * v:.1f} %"


def behaviour_sentences(rows: list[dict], method: str, who: str) -> list[str]:
    """What ``method``'s models did against random's, per behaviour measured (the grid's primary first); nothing when
    no grid measured it."""
    out = []
    mine = [r for r in rows if r["method"] == method and r["metric"] in BEHAVIOUR_WORDS
            and (r["primary"] or r["set"] == "heldout")]
    for r in sorted(mine, key=lambda r: (not r["primary"], list(BEHAVIOUR_WORDS).index(r["metric"]))):
        if not r["primary"] and r["verdict"] == "no difference detected":
            continue
        bh = "" if r["verdict"] == "no difference detected" else (
            ", survives BH" if r["survives_bh"] else f", not after BH (q {r['q']:.2f})")
        out.append(f"{who} {BEHAVIOUR_WORDS[r['metric']]} on {_rate(r['value'])} of {r['set']} prompts against random "
                   f"{r['budget']} subsets' {_rate(r['random'])} ({_ci(r)}, {r['verdict']}{bh})")
    return out


def head_to_head(grid: str, metric: str, sets: list[str], a: str, b: str, n_boot: int = 2000) -> dict | None:
    """``a``'s cells minus ``b``'s on ``metric`` over ``sets`` (items pooled), two-level CI, from the per-item file."""
    items, cells = RESULTS / grid / "results.parquet", RESULTS / grid / "cells.parquet"
    if not items.exists():
        return None
    res = json.loads((RESULTS / grid / "results.json").read_text())
    items, cells = pd.read_parquet(items), pd.read_parquet(cells)
    items = items[items["set"].isin(sets) & items["key"].isin(cells["key"])]
    if metric not in items:
        return None
    wide = items.assign(item=items["set"] + "/" + items["id"]).pivot_table(index="key", columns="item", values=metric)
    keys = {m: cells.loc[cells["method"] == m, "key"] for m in (a, b)}
    if any(not len(k) for k in keys.values()):
        return None
    d = two_level_difference(wide.loc[keys[a]].to_numpy(), wide.loc[keys[b]].to_numpy(), n_boot=n_boot, seed=0)
    return {"a": a, "b": b, "metric": metric, "sets": sets, "grid": grid, "cells": res["cells"],
            **{k: d[k] for k in ("diff", "low", "high", "verdict", "p")}}


def advice(clean: list[dict], noisy: list[dict], auroc: dict, full: list[dict] = (), behaviour: list[dict] = (),
           versus: list[dict] = (), rate: str = "") -> str:
    """siftlm's advice, from the verdicts and the AUROCs; behaviour only where a grid measured it."""
    better = _named(clean, "better")
    if better:
        head = (f"In siftlm's clean grids, {'; '.join(better)} trained a better model than random subsets (held-out "
                "loss per token, CI excluding 0).")
    else:
        head = ("No selection method beat random subsets of the same size in siftlm's clean grids (held-out loss per "
                "token; CIs over seeds, subsets and items).")
    worse = _named(clean, "worse")
    if worse:
        head += f" Worse than random there, with the CI excluding 0: {'; '.join(worse)}."
    for r in full:
        if r["set"] == "heldout" and r["metric"] == LOSS:
            head += (f" Training on the whole pool ({r['examples']:.0f} examples) came out {_ci(r)} from a random "
                     f"{r['budget']} subset ({r['verdict']})"
                     + ("; at that scale, the examples a selection drops cost held-out loss." if r["verdict"] == "better"
                        else "."))
    best = max(auroc.items(), key=lambda kv: kv[1]["all"]) if auroc else None
    if not best:
        return head
    name = best[0]
    keep = "lowest" if SCORES[name].direction == "low" else "highest"
    method = f"{keep}:{name}"
    head += f" Of the scores, {name} ranks injected junk last best (noisy-pool AUROC {best[1]['all']:.2f})."
    mine = sorted((r for r in _loss(noisy) if r["method"] == method), key=_fraction)
    for r in mine:
        bh = "" if r["verdict"] == "no difference detected" or r.get("survives_bh", True) else ", not after BH"
        head += (f" As a {r['budget']} selection on the noisy pool it trained a model {_ci(r)} from random's held-out "
                 f"loss per token ({r['verdict']}{bh}).")
    said = behaviour_sentences(list(behaviour), method, f"Keeping the {keep} by {name},")
    if said:
        head += f" On a pool with {rate} junk, keeping half: " + "; ".join(said) + "."
        for other, who in (("filter", "the detector filter (no model)"), ("oracle", "dropping exactly the junk")):
            s = behaviour_sentences(list(behaviour), other, who)
            if s:
                head += " For comparison, " + s[0] + "."
        for v in versus:
            word = v["verdict"] if v["verdict"] == "no difference detected" else "lower" if v["high"] < 0 else "higher"
            head += f" {v['a']} minus {v['b']} ({v['metric'].replace('_', ' ')} rate): {_ci(v)} ({word})."
    small = (f"in the clean grids, {'; '.join(better)} did." if better
             else "no measured method picks a small subset better than random.")
    head += " " + _filter_advice(keep, name, [r for r in mine if _fraction(r) >= GENEROUS], small,
                                 [r for r in behaviour if r["method"] == method and r["primary"]])
    return head


def _filter_advice(keep: str, name: str, generous: list[dict], small: str, acts: list[dict] = ()) -> str:
    """What to do with the best junk-ranking score, from its generous-filter fine-tunes' verdicts (if any ran) and,
    where measured, what its models did."""
    how = f"near-duplicate removal, then keep the {keep} by {name} at a generous budget"

    def at(verdict: str) -> str:
        return ", ".join(r["budget"] for r in generous if r["verdict"] == verdict)

    if any(r["verdict"] == "better" for r in acts):
        return (f"Use it as a junk filter ({how}): it measurably changed what the model does (above), "
                f"rather than to pick a small subset: {small}")
    if at("better"):
        return (f"Use it to filter junk ({how}: at {at('better')} it trained better than random subsets of the same "
                f"size on held-out loss) rather than to pick a small subset: {small}")
    if at("worse"):
        return (f"Even as a generous filter (at {at('worse')}) its selection trained worse than random subsets of the "
                f"same size: dropping the junk did not make up for what it dropped with it. Use it to find junk to inspect or "
                f"remove, and train on a random subset or the whole pool: {small}")
    if generous:
        return (f"As a generous filter (at {', '.join(r['budget'] for r in generous)}) it removes junk but trained a "
                f"model not distinguishable from random subsets of the same size on held-out loss. Use it to find and "
                f"drop junk ({how}), not to pick a small subset: {small}")
    return (f"Use it to filter junk ({how}, e.g. 0.5-0.8; not measured against random at that size) rather than to "
            f"pick a small subset: {small}")


def lead(score: str, ev: dict) -> str:
    """The one sentence a report opens with for ``score``: the strongest measured fact about selecting by it, and
    what to do."""
    keep = "lowest" if SCORES[score].direction == "low" else "highest"
    method = f"{keep}:{score}"
    acts = [r for r in ev.get("behaviour", {}).get("rows", []) if r["method"] == method and r["primary"]]
    for r in acts:
        if r["verdict"] != "no difference detected":
            verb, advice_ = ("cut", "use it as a junk filter.") if r["diff"] < 0 else (
                "raised", "do not use it to filter junk.")
            return (f"Keeping the {keep} {r['budget']} by {score} {verb} how often the fine-tuned model "
                    f"{BEHAVIOUR_WORDS[r['metric']]} from {_rate(r['random'])} (random) to {_rate(r['value'])} "
                    f"({_ci(r)}) on a pool with {ev['behaviour']['rate']} junk: {advice_}")
    rows = _loss(ev.get("clean", {}).get("rows", [])) + _loss(ev.get("noisy_cells", {}).get("rows", []))
    mine = [r for r in rows if r["method"] == method]
    bad = [r for r in mine if r["verdict"] == "worse"]
    good = [r for r in mine if r["verdict"] == "better"]
    if good and not bad:
        even = [r for r in mine if "tokens" in r["budget"] and r["verdict"] == "no difference detected"]
        if even and all("tokens" not in r["budget"] for r in good):
            return (f"Selecting the {keep} by {score} trained a better model than random subsets at "
                    f"{', '.join(sorted({r['budget'] for r in good}))} of the examples, but not at "
                    f"{', '.join(sorted({r['budget'] for r in even}))} ({_ci(even[0])}): its gain came with more "
                    "tokens to train on (longer answers). Compare at your token budget before relying on it.")
        return (f"Selecting the {keep} by {score} trained a better model than random subsets at "
                f"{', '.join(sorted({r['budget'] for r in good}))} (held-out loss per token): worth using at those "
                "budgets.")
    if bad:
        return (f"Selecting the {keep} by {score} trained worse models than random subsets at "
                f"{', '.join(sorted({r['budget'] for r in bad}))} (held-out loss per token): prefer a random subset "
                "unless you are filtering junk.")
    if mine:
        return (f"Selecting the {keep} by {score} trained models not distinguishable from random subsets "
                "(held-out loss per token): it buys no measured gain at these scales.")
    return f"siftlm's grids have not fine-tuned on a selection by {score}: treat it as unmeasured."


def target_lead(method: str, rows: list[dict]) -> str:
    """The one sentence ``siftlm run --target --target-method METHOD`` opens its evidence with: the targeted grids'
    primary verdicts for METHOD->query, each with its CI, or that they have not measured it."""
    mine = [r for r in rows if r["method"] == f"{method}->query" and r["primary"]]
    if not mine:
        return f"siftlm's targeted grids have not measured --target-method {method}: treat it as unmeasured."
    parts = []
    for r in mine:
        bh = "" if r["verdict"] == "no difference detected" else (
            ", survives BH" if r["survives_bh"] else f", not after BH (q {r['q']:.2f})")
        parts.append(f"{r['grid']} at {r['budget']}: {r['metric']} on the target minus random subsets' {_ci(r, 4)}, "
                     f"{r['verdict']}{bh}")
    good = [r for r in mine if r["verdict"] == "better"]
    bad = [r for r in mine if r["verdict"] == "worse"]
    advice_ = ("it trained a better model for the target than random subsets of the same size" if good and not bad
               else "it trained a worse model for the target than random subsets" if bad and not good
               else "mixed verdicts across grids" if good and bad
               else "its model was not distinguishable from random subsets' on the target")
    return f"Selecting toward your examples with --target-method {method}: {advice_} ({'; '.join(parts)})."


def _draws(res: dict) -> str:
    cfg = res["config"]
    return f"{cfg['random_subsets']} random subsets, {len(cfg['seeds'])} seeds per method"


def _read(grid: str) -> dict | None:
    path = RESULTS / grid / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def _budgets(grid: str, res: dict, first: str = "clean") -> str:
    cfg = res["config"]
    tokens = "response tokens" if cfg.get("budget_on") == "response" else "tokens"
    parts = ([f"{100 * b:g} % of the examples" for b in cfg.get("budgets") or []]
             + [f"{100 * b:g} % of the {tokens}" for b in cfg.get("budget_tokens") or []])
    return "; ".join(parts) + ("" if grid == first else f": {grid} grid")


def build() -> dict:
    """The evidence file's content from the committed results (a test checks the shipped file equals it)."""
    ev: dict = {"setting": "SmolLM2-135M-Instruct with LoRA on alpaca_en_demo pools of 400-700 examples, 2 CPU cores"}
    grids = {g: r for g in CLEAN_GRIDS if (r := _read(g))}
    if "clean" in grids:
        res, pool = grids["clean"], grids["clean"]["pool"]
        budgets = "; ".join(_budgets(g, r) for g, r in grids.items())
        rows = [row for r in grids.values() for row in grid_rows(r)]
        ev["clean"] = {"setting": f"{pool['pool']} examples, {pool['heldout']} held out, {_draws(res)} ({budgets})",
                       "rows": [r for r in rows if r["method"] != "full"],
                       "full": [r for r in rows if r["method"] == "full"]}
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
                                        f"{100 * res['noise']['pool_rate']:.0f} % junk), {_draws(res)} ({budgets})",
                             "rows": [row for r in grids.values() for row in grid_rows(r)]}
    res = _read(BEHAVIOUR_GRID)
    versus = []
    if res:
        p = res["primary"]
        rate = f"{100 * res['noise']['pool_rate']:.0f} %"
        ev["behaviour"] = {"rate": rate, "setting": f"{res['pool']['pool']} examples with {rate} "
                                      f"junk (refusals, foreign-language answers, loops and three more kinds), half "
                                      f"kept, {_draws(res)}; primary endpoint {p['metric']} on {' + '.join(p['sets'])}",
                           "rows": grid_rows(res, KEPT_METRICS + BEHAVIOUR_METRICS)}
        keep = "lowest:lp_app"
        versus = [v for other in ("filter", "oracle")
                  if (v := head_to_head(BEHAVIOUR_GRID, p["metric"], p["sets"], keep, other))]
        ev["behaviour"]["versus"] = versus
    targeted = {g: r for g in TARGETED_GRIDS if (r := _read(g))}
    if targeted:
        rows = [{**row, "grid": g} for g, r in targeted.items() for row in grid_rows(r, KEPT_METRICS + BEHAVIOUR_METRICS)
                if row["set"] == "target"]
        ev["targeted"] = {"setting": "; ".join(f"{g}: {r['pool']['pool']} examples, {_draws(r)} "
                                                f"({_budgets(g, r, first=g)})" for g, r in targeted.items()),
                          "rows": rows, "leads": {m: target_lead(m, rows) for m in TARGET_METHODS}}
    ev["advice"] = advice(ev.get("clean", {}).get("rows", []), ev.get("noisy_cells", {}).get("rows", []),
                          ev.get("noisy", {}).get("auroc", {}), ev.get("clean", {}).get("full", []),
                          ev.get("behaviour", {}).get("rows", []), versus, ev.get("behaviour", {}).get("rate", ""))
    ev["leads"] = {s: lead(s, ev) for s in sorted(SCORES)}
    return json.loads(json.dumps(ev, default=_plain))


def _plain(v):
    return v.item() if isinstance(v, np.generic) else str(v)


def main() -> None:
    ev = build()
    OUT.write_text(json.dumps(ev, indent=1) + "\n")
    print(f"{OUT}: {ev['advice']}")


if __name__ == "__main__":
    main()

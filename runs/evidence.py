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


def clean_rows(res: dict) -> list[dict]:
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


def advice(rows: list[dict], auroc: dict) -> str:
    better = sorted({(r["method"], r["budget"]) for r in rows if r["verdict"] == "better" and r["set"] == "heldout"})
    best = max(auroc.items(), key=lambda kv: kv[1]["all"]) if auroc else None
    if better:
        names = "; ".join(f"{m} at {b}" for m, b in better)
        head = f"In siftlm's clean grid, {names} trained a better model than random subsets (held-out loss, CI excluding 0)."
    else:
        head = ("No selection method beat random subsets of the same size in siftlm's clean grid (held-out loss; CIs "
                "over seeds, subsets and items include 0 or favour random).")
    if best:
        keep = "lowest" if SCORES[best[0]].direction == "low" else "highest"
        head += (f" Of the scores, {best[0]} ranks injected junk last best (noisy-pool AUROC {best[1]['all']:.2f}): use "
                 f"selection to filter junk (near-duplicate removal, then keep the {keep} by {best[0]} at a generous "
                 "budget) rather than to beat random on clean data.")
    return head


def main() -> None:
    ev: dict = {"setting": "SmolLM2-135M-Instruct with LoRA on alpaca_en_demo pools of 600-700 examples, 2 CPU cores"}
    clean = RESULTS / "clean" / "results.json"
    if clean.exists():
        res = json.loads(clean.read_text())
        pool = res.get("pool", {})
        ev["clean"] = {"setting": f"{pool.get('pool')} examples, 100 held out, 5 random subsets, 3 seeds per method",
                       "rows": clean_rows(res)}
    noisy = RESULTS / "noisy-smollm2" / "results.json"
    if noisy.exists():
        n = json.loads(noisy.read_text())["noise"]
        ev["noisy"] = {"setting": f"{n['scored']} examples, {100 * n['pool_rate']:.0f} % injected junk of 6 kinds",
                       "auroc": n["auroc_scores"], "methods": n["auroc_methods"]}
    ev["advice"] = advice(ev.get("clean", {}).get("rows", []), ev.get("noisy", {}).get("auroc", {}))
    OUT.write_text(json.dumps(ev, indent=1) + "\n")
    print(f"{OUT}: {ev['advice']}")


if __name__ == "__main__":
    main()

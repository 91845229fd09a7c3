"""How much two rankings of the same data agree: two models' scores (small selects for large: LP Tables 1 and 3,
DavIR Table 9) or two scores of one model (LP vs LP_app). Kendall tau and Spearman rho over the examples both
score (with bootstrap CIs), and at each budget the overlap of the two selections: |A and B| / k (DavIR Table 9's
"percent overlap") and the IoU |A and B| / |A or B|."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.errors import DataError, UsageError
from siftlm.files import atomic_write
from siftlm.report.html import figure, png, pyplot, table, write_page
from siftlm.scores import direction
from siftlm.select.topk import budget_count, topk
from siftlm.stats import bootstrap_ci, kendall, spearman


def agreement(a: pd.DataFrame, b: pd.DataFrame, by: str, by_b: str | None = None, *, budgets=(0.05, 0.1, 0.3),
              n_boot: int = 1000) -> dict:
    """Agreement of ranking ``a[by]`` with ``b[by_b or by]`` over the ids both tables hold (each score's own
    direction decides which end is selected)."""
    by_b = by_b or by
    for t, col, name in ((a, by, "first"), (b, by_b, "second")):
        if col not in t:
            raise UsageError(f"the {name} table has no column {col!r}; have {[c for c in t.columns if c != 'id']}")
    both = a[["id", by]].merge(b[["id", by_b]], on="id", suffixes=("_a", "_b"))
    ca, cb = (f"{by}_a", f"{by_b}_b") if by == by_b else (by, by_b)
    both = both[np.isfinite(both[ca]) & np.isfinite(both[cb])]
    if len(both) < 3:
        raise DataError(f"only {len(both)} examples have both scores; are these tables of the same data?")
    x, y = both[ca].to_numpy(float), both[cb].to_numpy(float)
    sign = 1.0 if direction(by) == direction(by_b) else -1.0          # lp (low) vs davir (high): compare like with like
    out = {"n": len(both), "only_first": int(len(a) - len(both)), "only_second": int(len(b) - len(both)),
           "first": by, "second": by_b,
           "kendall": dict(zip(("value", "low", "high"), bootstrap_ci(kendall, x, sign * y, n_boot=n_boot), strict=True)),
           "spearman": dict(zip(("value", "low", "high"), bootstrap_ci(spearman, x, sign * y, n_boot=n_boot),
                                strict=True)),
           "overlap": []}
    ids = both["id"].to_numpy()
    for budget in budgets:
        k = budget_count(budget, len(both))
        sa = set(ids[topk(ids, x, budget=k, direction=direction(by))])
        sb = set(ids[topk(ids, y, budget=k, direction=direction(by_b))])
        inter = len(sa & sb)
        out["overlap"].append({"budget": budget, "k": k, "common": inter, "share": inter / k,
                               "iou": inter / len(sa | sb), "random_share": k / len(both)})
    return out


def write(res: dict, names: tuple[str, str], out: str | Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "agreement.json") as tmp:
        tmp.write_text(json.dumps({"files": names, **res}, indent=2))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = [o["budget"] for o in res["overlap"]]
    ax.plot(range(len(ks)), [100 * o["share"] for o in res["overlap"]], "o-", label="selected by both / k")
    ax.plot(range(len(ks)), [100 * o["iou"] for o in res["overlap"]], "s-", label="IoU")
    ax.plot(range(len(ks)), [100 * o["random_share"] for o in res["overlap"]], ":", color="grey",
            label="expected for unrelated rankings")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set(xlabel="budget", ylabel="%", ylim=(0, 105), title=f"top-k overlap: {res['first']} vs {res['second']}")
    ax.legend()
    rows = [[k, f"{res[k]['value']:+.3f}", f"[{res[k]['low']:+.3f}, {res[k]['high']:+.3f}]"] for k in ("kendall", "spearman")]
    body = (f"<p>{res['n']} examples scored by both: {names[0]} ({res['first']}) and {names[1]} ({res['second']}).</p>"
            + table(["rank correlation", "value", "95% CI"], rows)
            + table(["budget", "k", "selected by both", "share of k", "IoU", "unrelated (expected share)"],
                    [[o["budget"], o["k"], o["common"], f"{o['share']:.3f}", f"{o['iou']:.3f}", f"{o['random_share']:.3f}"]
                     for o in res["overlap"]]) + figure(png(fig)))
    return {"json": out / "agreement.json", "html": write_page(out / "report.html", "siftlm agreement", body)}

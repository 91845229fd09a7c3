"""Two arms of a committed grid against each other (not against random): the difference of held-out loss per token
and per item with the same two-level bootstrap as the grid's tables (seeds of each arm, then the shared items).

    python runs/compare_arms.py runs/results/smollm2-selects-gemma "lowest:lp_app" "lowest:lp_app by gemma" --set heldout
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from siftlm.stats import two_level_difference


def arm_matrix(cells: pd.DataFrame, items: pd.DataFrame, method: str, set_name: str) -> tuple[pd.DataFrame, pd.Series]:
    """One row per cell of ``method`` (its per-item losses on ``set_name``), and the items' token counts."""
    part = items[items["set"] == set_name]
    keys = cells.loc[cells["method"] == method, "key"]
    if keys.empty:
        raise SystemExit(f"no cells of method {method!r}; methods: {sorted(set(cells['method']))}")
    losses = part.pivot_table(index="key", columns="id", values="loss", aggfunc="first").loc[list(keys)]
    tokens = part.groupby("id")["n_tokens"].first().loc[losses.columns]
    return losses, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="a grid's results folder (cells.parquet, results.parquet)")
    ap.add_argument("method")
    ap.add_argument("baseline")
    ap.add_argument("--set", default="heldout")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()
    folder = Path(args.results)
    cells, items = pd.read_parquet(folder / "cells.parquet"), pd.read_parquet(folder / "results.parquet")
    m, tokens = arm_matrix(cells, items, args.method, args.set)
    b, _ = arm_matrix(cells, items, args.baseline, args.set)
    b = b[m.columns]
    for label, weights in (("loss per token", tokens.to_numpy(float)), ("loss per item", None)):
        d = two_level_difference(m.to_numpy(), b.to_numpy(), n_boot=args.n_boot, seed=0, weights=weights)
        print(f"{args.method} minus {args.baseline}, {label} on {args.set} ({d['n_items']} items, {d['n_method']} vs "
              f"{d['n_baseline']} cells): {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] {d['verdict']}")


if __name__ == "__main__":
    main()

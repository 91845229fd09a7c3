"""Two arms of a committed grid against each other (not against random): the difference of held-out loss per token
and per item on the grid tables' own cells x items matrix (``metric_matrix``) with the same two-level bootstrap
(seeds of each arm, then the shared items).

    python runs/compare_arms.py runs/results/smollm2-selects-gemma "lowest:lp_app" "lowest:lp_app by gemma" --set heldout
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from siftlm.report.experiment import metric_matrix
from siftlm.stats import two_level_difference


def arm_rows(cells: pd.DataFrame, values: pd.DataFrame, method: str) -> pd.DataFrame:
    """The rows of ``values`` (cells x items, ``metric_matrix``) that are cells of ``method``."""
    keys = cells.loc[cells["method"] == method, "key"]
    if keys.empty:
        raise SystemExit(f"no cells of method {method!r}; methods: {sorted(set(cells['method']))}")
    return values.loc[[k for k in keys if k in values.index]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="a grid's results folder (cells.parquet, results.parquet)")
    ap.add_argument("method")
    ap.add_argument("baseline")
    ap.add_argument("--set", default="heldout")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()
    folder = Path(args.results)
    if not (folder / "cells.parquet").exists() or not (folder / "results.parquet").exists():
        raise SystemExit(f"{folder}: not a grid's results folder (no cells.parquet and results.parquet)")
    cells, items = pd.read_parquet(folder / "cells.parquet"), pd.read_parquet(folder / "results.parquet")
    part = items[items["set"] == args.set]
    if part.empty:
        raise SystemExit(f"{folder}: no evaluation set {args.set!r}; sets: {sorted(set(items['set']))}")
    for metric in ("loss_per_token", "loss_per_item"):
        values, weights = metric_matrix(part, metric)
        m, b = arm_rows(cells, values, args.method), arm_rows(cells, values, args.baseline)
        d = two_level_difference(m.to_numpy(), b.to_numpy(), n_boot=args.n_boot, seed=0, weights=weights)
        print(f"{args.method} minus {args.baseline}, {metric.replace('_', ' ')} on {args.set} ({d['n_items']} items, "
              f"{d['n_method']} vs {d['n_baseline']} cells): {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] "
              f"{d['verdict']}")

if __name__ == "__main__":
    main()

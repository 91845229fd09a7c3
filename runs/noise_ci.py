"""Uncertainty for the noisy-pool tables in docs/experiments.md, from the committed files only: a 95 % bootstrap CI
(2,000 resamples of the pool's rows, seed 0) for each score's AUROC of clean vs corrupted, and the 95 % range of a
random selection's corrupted share at each budget (hypergeometric: k of N rows drawn, K of them corrupted).

    python runs/noise_ci.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from siftlm.recipes.noisy import auroc, oriented

RESULTS = Path(__file__).parent / "results"
SCORES = ("davir", "davir_e1", "rho", "lp", "lp_app", "ifd", "ppl", "el2n", "tokens_out", "grad_norm")


def main() -> None:
    for grid in ("noisy-smollm2", "noisy-gemma"):
        table = pd.read_parquet(RESULTS / grid / "pool" / "scores" / "scores.parquet")
        labels = pd.read_parquet(RESULTS / grid / "pool" / "labels.parquet").set_index("id")
        bad = (labels.loc[table["id"], "kind"] != "clean").to_numpy()
        rng = np.random.default_rng(0)
        print(f"{grid}: {len(table)} scored, {int(bad.sum())} corrupted")
        for score in SCORES:
            keep = oriented(table, score)
            boot = [auroc(keep[i], bad[i]) for i in (rng.integers(0, len(keep), len(keep)) for _ in range(2000))]
            lo, hi = np.nanpercentile(boot, [2.5, 97.5])
            print(f"  AUROC {score:<10} {auroc(keep, bad):.3f} [{lo:.3f}, {hi:.3f}]")
        n_all, n_bad = len(table), int(bad.sum())
        for budget in (0.1, 0.25):
            k = int(round(budget * n_all))
            lo, hi = hypergeom.ppf([0.025, 0.975], n_all, n_bad, k)
            print(f"  random {budget:.0%} ({k} rows): corrupted share 95 % range {lo / k:.1%} to {hi / k:.1%}")


if __name__ == "__main__":
    main()

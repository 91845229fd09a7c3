"""Statistics that reports and summaries show: the length dependence of signals and scores (DavIR Tables 1-2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def length_correlations(table: pd.DataFrame) -> dict:
    """Pearson and Spearman of loss, entropy, RHO-LM and DavIR against total and response token counts."""
    res = {}
    for length_col in ("tokens_total", "n_response"):
        n = table["n_prompt"] + table["n_response"] if length_col == "tokens_total" else table["n_response"]
        for col in ("base_loss", "base_entropy", "rho", "davir"):
            if col in table and np.isfinite(p := pearson(table[col], n)):
                res[f"{col}~{length_col}"] = {"pearson": p, "spearman": spearman(table[col], n)}
    return res


def finite_mean(values) -> float | None:
    """Mean of the finite values, None when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def bootstrap_ci(stat, *columns, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(statistic, low, high): ``stat(*columns)`` on the data and the percentile interval of ``level`` over
    ``n_boot`` resamples of the rows with replacement (seeded). Resamples where the statistic is undefined (NaN,
    e.g. a constant column) are left out."""
    cols = [np.asarray(c) for c in columns]
    n = len(cols[0])
    rng = np.random.default_rng(seed)
    draws = np.array([stat(*(c[idx] for c in cols)) for idx in rng.integers(0, n, size=(n_boot, n))], dtype=float)
    draws = draws[np.isfinite(draws)]
    tail = (1 - level) / 2 * 100
    low, high = (np.percentile(draws, [tail, 100 - tail]) if len(draws) else (np.nan, np.nan))
    return float(stat(*cols)), float(low), float(high)


def pearson(x, y) -> float:
    """Pearson r of the rows where both are finite; NaN when either is constant or fewer than 3 rows remain."""
    return _corr(stats.pearsonr, x, y)


def spearman(x, y) -> float:
    return _corr(stats.spearmanr, x, y)


def kendall(x, y) -> float:
    return _corr(stats.kendalltau, x, y)


def _corr(fn, x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(fn(x[ok], y[ok]).statistic)

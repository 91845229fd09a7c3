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
            if col not in table:
                continue
            v = table[col].to_numpy()
            ok = np.isfinite(v)
            if ok.sum() < 3 or np.std(v[ok]) == 0:
                continue
            res[f"{col}~{length_col}"] = {"pearson": float(stats.pearsonr(v[ok], n[ok]).statistic),
                                          "spearman": float(stats.spearmanr(v[ok], n[ok]).statistic)}
    return res


def finite_mean(values) -> float | None:
    """Mean of the finite values, None when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None

"""Uncertainty for every comparison: bootstrap CIs of means and win rates, paired bootstrap differences over the same
evaluation examples, and a length-controlled win rate fitted on our own judgments."""

from __future__ import annotations

import numpy as np

from siftlm.report.stats import bootstrap_ci


def mean_ci(values, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """{"mean", "low", "high", "n"}: the mean of the finite values and its 95% percentile bootstrap interval."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    m, lo, hi = bootstrap_ci(np.mean, v, n_boot=n_boot, seed=seed)
    return {"mean": m, "low": lo, "high": hi, "n": int(len(v))}


def paired_difference(a, b, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """mean(a - b) over the examples both scored, with a paired bootstrap CI (the same resampled examples on both
    sides), and how often a resample's difference is <= 0 (a one-sided bootstrap p-value for a > b)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if not len(d):
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0, "p_le_0": float("nan")}
    rng = np.random.default_rng(seed)
    draws = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"diff": float(d.mean()), "low": float(low), "high": float(high), "n": int(len(d)),
            "p_le_0": float((draws <= 0).mean())}


def win_rate(preferences, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Win rate in percent of preferences in [0, 1] (1 = the model wins, 0.5 = a tie, NaN = no verdict, left out)
    with a bootstrap CI."""
    out = mean_ci(np.asarray(preferences, dtype=np.float64) * 100, n_boot=n_boot, seed=seed)
    return {"win_rate": out["mean"], "low": out["low"], "high": out["high"], "n": out["n"]}


def length_controlled_win_rate(preferences, length_diff) -> dict:
    """AlpacaEval 2's length-controlled win rate, fitted on our own judgments.

    AlpacaEval fits logit P(model wins) = theta + phi * tanh(d / sd(d)) + psi * difficulty, d the difference in
    characters between the two outputs, and reports the mean predicted win rate with the length term set to 0
    (``alpaca_eval/metrics/glm_winrate.py``). We fit the same model without the instruction-difficulty term and
    without the "gamed baseline" rows AlpacaEval regularises with (both come from its hub data, and one model
    against one baseline leaves psi unidentified): logistic regression with soft labels (a tie is half a win, as
    there), so LC = 100 * sigmoid(theta). Unjudged items (NaN) are left out.
    """
    from sklearn.linear_model import LogisticRegression

    p = np.asarray(preferences, dtype=np.float64)
    d = np.asarray(length_diff, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(d)
    p, d = p[ok], d[ok]
    if len(p) < 2:
        return {"win_rate": float("nan"), "n": int(len(p)), "length_coef": float("nan")}
    sd = d.std(ddof=1)
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    xs, ys, ws = np.r_[x, x][:, None], np.r_[np.ones_like(p), np.zeros_like(p)], np.r_[p, 1 - p]
    keep = ws > 0
    if len(set(ys[keep])) < 2:                       # every judgment one way: the fit has no finite optimum
        return {"win_rate": float(100 * p.mean()), "n": int(len(p)), "length_coef": 0.0}
    fit = LogisticRegression(C=1e4, max_iter=1000).fit(xs[keep], ys[keep], sample_weight=ws[keep])
    theta = float(fit.intercept_[0])
    return {"win_rate": float(100 / (1 + np.exp(-theta))), "n": int(len(p)), "length_coef": float(fit.coef_[0, 0])}

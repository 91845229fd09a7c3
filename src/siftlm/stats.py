"""Statistics for every summary and comparison: length correlations (DavIR Tables 1-2), bootstrap CIs of means and
win rates, paired and two-level (seeds/subsets, then items) bootstrap differences with the verdict rule, and a
length-controlled win rate fitted on our own judgments. Pure numpy/scipy: every layer may use it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def length_correlations(table: pd.DataFrame) -> dict:
    """Pearson and Spearman of loss, entropy, RHO-LM and DavIR against total and response token counts."""
    res = {}
    for length_col in ("tokens_total", "n_response"):
        n = table["n_prompt"] + table["n_response"] if length_col == "tokens_total" else table["n_response"]
        for col in ("base_loss", "base_entropy", "rho", "davir", "davir_e1", "davir_xfit"):
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


def auroc(keep, positive) -> float:
    """P(a negative row's ``keep`` value > a positive one's), ties half: the Mann-Whitney statistic (e.g. ``positive``
    marks the corrupted examples, and 1.0 means every clean one is kept first). NaN ``keep`` values count as never
    kept (below everything); NaN when either group is empty."""
    keep = np.asarray(keep, dtype=np.float64)
    bad = np.asarray(positive, dtype=bool)
    keep = np.where(np.isfinite(keep), keep, -np.inf)
    n_bad, n_clean = int(bad.sum()), int((~bad).sum())
    if not n_bad or not n_clean:
        return float("nan")
    ranks = stats.rankdata(keep)                   # average ranks for ties; -inf ranks lowest
    return float((ranks[~bad].sum() - n_clean * (n_clean + 1) / 2) / (n_clean * n_bad))


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


NO_DIFFERENCE = "no difference detected"


def verdict(low: float, high: float, *, lower_is_better: bool | None = True) -> str:
    """The words for a difference (method - baseline) from its confidence interval alone, never from the point
    estimate: "better" or "worse" only when the interval excludes 0, else "no difference detected". A metric with
    no better direction (``lower_is_better=None``, e.g. answer length) is "higher" or "lower"."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return NO_DIFFERENCE
    if high < 0:
        return "lower" if lower_is_better is None else "better" if lower_is_better else "worse"
    if low > 0:
        return "higher" if lower_is_better is None else "worse" if lower_is_better else "better"
    return NO_DIFFERENCE


def bh_qvalues(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of a family of p-values (``scipy.stats.false_discovery_control``);
    NaN stays NaN and is not counted in the family."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method="bh")
    return q


def two_level_difference(method, baseline, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                         weights=None, lower_is_better: bool | None = True) -> dict:
    """mean(method) - mean(baseline) with a two-level bootstrap CI that holds training and subset noise as well as
    evaluation-item noise.

    ``method`` is S x I (one row per seed of the method: its per-item losses), ``baseline`` R x I (one row per random
    subset), over the same I items. Each resample draws S rows of ``method`` and R rows of ``baseline`` with
    replacement (the seed / subset level), then I items with replacement, the same items for both sides (the paired
    item level), and takes the difference of the grand means. With a single row on a side, that side contributes no
    seed variance (said in ``levels``). ``weights`` (I, e.g. each item's token count) makes every mean a weighted one:
    with per-item per-token losses and their token counts, the difference of per-token losses (summed NLL / summed
    tokens). Returns diff, low, high, p_le_0 / p_ge_0 (the shares of resamples <= 0 and >= 0), p (two-sided), the
    counts, the seed-level standard deviations and the verdict (``lower_is_better=None``: a metric with no better
    direction, whose verdict says "higher" / "lower")."""
    m, b = np.atleast_2d(np.asarray(method, dtype=np.float64)), np.atleast_2d(np.asarray(baseline, dtype=np.float64))
    if m.shape[1] != b.shape[1]:
        raise ValueError(f"method and baseline are scored on different items ({m.shape[1]} vs {b.shape[1]})")
    w = np.ones(m.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(m).all(0) & np.isfinite(b).all(0) & np.isfinite(w)
    m, b, w = m[:, ok], b[:, ok], w[ok]
    s, r, n = len(m), len(b), m.shape[1]
    if not n:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "p_le_0": float("nan"), "n_items": 0,
                "n_method": s, "n_baseline": r, "verdict": NO_DIFFERENCE}
    rng = np.random.default_rng(seed)
    rows_m = np.stack([np.bincount(rng.integers(0, s, s), minlength=s) for _ in range(n_boot)]) / s    # B x S weights
    rows_b = np.stack([np.bincount(rng.integers(0, r, r), minlength=r) for _ in range(n_boot)]) / r    # B x R
    items = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]) * w      # B x I
    items = items / items.sum(1, keepdims=True)
    draws = ((rows_m @ m) * items).sum(1) - ((rows_b @ b) * items).sum(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    diff = float((m.mean(0) * w).sum() / w.sum() - (b.mean(0) * w).sum() / w.sum())
    p_le, p_ge = float((draws <= 0).mean()), float((draws >= 0).mean())
    return {"diff": diff, "low": float(low), "high": float(high), "p_le_0": p_le, "p_ge_0": p_ge,
            "p": float(min(1.0, max(2 * min(p_le, p_ge), 1 / n_boot))), "n_items": int(n), "n_method": s,
            "n_baseline": r,
            "method_seed_sd": float(m.mean(1).std(ddof=1)) if s > 1 else 0.0,
            "baseline_seed_sd": float(b.mean(1).std(ddof=1)) if r > 1 else 0.0,
            "levels": ("seeds/subsets and items" if s > 1 and r > 1 else
                       "items, and seeds on the side with several" if s > 1 or r > 1 else "items only"),
            "verdict": verdict(float(low), float(high), lower_is_better=lower_is_better)}


def share_beaten(value: float, distribution, *, lower_is_better: bool = True) -> float:
    """The share of ``distribution`` (e.g. the random subsets' mean losses) that ``value`` beats; ties count half.
    0.5: the middle of the random subsets; 1.0: better than every one."""
    d = np.asarray(distribution, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d) or not np.isfinite(value):
        return float("nan")
    wins = (d > value) if lower_is_better else (d < value)
    return float((wins.sum() + 0.5 * (d == value).sum()) / len(d))


def l2_normalize(x, *, floor: float = 1e-12):
    """Rows of ``x`` scaled to unit L2 norm; a row with norm below ``floor`` is divided by ``floor``, so a zero row
    stays zero instead of becoming NaN. An array (or anything NumPy takes) comes back as float64; a torch tensor
    stays a tensor of its own dtype on its own device."""
    if hasattr(x, "clamp_min") and hasattr(x, "norm"):          # a torch tensor: no trip through the CPU
        return x / x.norm(dim=1, keepdim=True).clamp_min(floor)
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), floor)

"""Statistics of comparisons against closed forms and simulated data."""

import numpy as np
import pytest

from siftlm.stats import length_controlled_win_rate, mean_ci, paired_difference, win_rate


def test_mean_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = mean_ci(rng.normal(2, 1, 50)), mean_ci(rng.normal(2, 1, 2000))
    assert small["low"] < small["mean"] < small["high"] and small["n"] == 50
    assert (large["high"] - large["low"]) < (small["high"] - small["low"]) / 4
    assert abs(large["high"] - large["low"] - 2 * 1.96 / np.sqrt(2000)) < 0.02          # the normal-theory width
    assert mean_ci([np.nan, 1.0, 3.0])["mean"] == 2.0 and mean_ci([])["n"] == 0


def test_paired_difference_sees_a_small_shift_an_unpaired_test_would_miss():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 5, 300)                          # large spread between examples
    a, b = base + 0.2 + rng.normal(0, 0.1, 300), base
    d = paired_difference(a, b)
    assert d["diff"] == pytest.approx(0.2, abs=0.03) and d["low"] > 0 and d["p_le_0"] == 0.0


def test_win_rate_counts_ties_as_half_and_leaves_unjudged_out():
    w = win_rate([1, 0, 0.5, 1, np.nan])
    assert w["win_rate"] == pytest.approx(62.5) and w["n"] == 4


def test_length_controlled_win_rate_removes_a_pure_length_preference():
    """A judge that prefers whichever output is longer: the raw win rate follows how often the model is longer,
    the length-controlled one goes back to ~50."""
    rng = np.random.default_rng(2)
    d = rng.normal(150, 200, 2000)                        # the model is usually longer
    prob = 1 / (1 + np.exp(-3 * np.tanh(d / d.std())))   # the judge cares only about length
    pref = (rng.random(2000) < prob).astype(float)
    raw, lc = win_rate(pref)["win_rate"], length_controlled_win_rate(pref, d)
    assert raw > 70 and abs(lc["win_rate"] - 50) < 5 and lc["length_coef"] > 2
    even = length_controlled_win_rate(np.r_[np.ones(60), np.zeros(40)], rng.normal(0, 1, 100))
    assert even["win_rate"] == pytest.approx(60, abs=3)     # no length effect: LC = raw


def test_l2_normalize_of_a_tensor_is_the_formula_the_grads_pass_always_used():
    """The grads pass normalises its vectors with stats.l2_normalize now: on a torch tensor the result is bit for bit
    the pass's own former expression (float32, floor 1e-30), so stored gradient features do not change."""
    import torch

    from siftlm.signals.grads import GRAD_NORM_FLOOR
    from siftlm.stats import l2_normalize

    y = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    y[3], y[7] = 0.0, 1e-20                                   # a zero row and a tiny one
    before = y / y.norm(dim=1, keepdim=True).clamp_min(1e-30)
    after = l2_normalize(y, floor=GRAD_NORM_FLOOR)
    assert after.dtype == torch.float32 and torch.equal(after, before)
    x = np.random.default_rng(0).standard_normal((10, 4))
    x[2] = 0.0
    assert np.array_equal(l2_normalize(x), x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def test_auroc_is_the_mann_whitney_statistic_with_ties_half_and_nan_never_kept():
    from scipy.stats import mannwhitneyu

    from siftlm.stats import auroc

    rng = np.random.default_rng(0)
    keep, bad = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.3       # many ties
    u = mannwhitneyu(keep[~bad], keep[bad]).statistic
    assert auroc(keep, bad) == pytest.approx(u / ((~bad).sum() * bad.sum()))
    assert auroc([3, 2, 1, 0], [False, False, True, True]) == 1.0
    assert auroc([np.nan, 1.0], [False, True]) == 0.0 and np.isnan(auroc([1.0, 2.0], [False, False]))

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

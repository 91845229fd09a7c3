"""The verdict rule, the two-level bootstrap against a brute-force loop and simulated truth, and share_beaten."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from siftlm.stats import NO_DIFFERENCE, share_beaten, two_level_difference, verdict


@given(st.floats(-10, 10), st.floats(0, 10))
def test_a_ci_containing_zero_never_gets_a_direction(low, width):
    high = low + width
    v = verdict(low, high)
    if low <= 0 <= high:
        assert v == NO_DIFFERENCE
    else:
        assert v == ("better" if high < 0 else "worse")
        assert verdict(low, high, lower_is_better=False) == ("worse" if high < 0 else "better")


def test_verdict_of_undefined_intervals():
    assert verdict(float("nan"), 1.0) == NO_DIFFERENCE


def _brute(m, b, n_boot, seed):
    """The same resampling, one resample at a time (the reference for the vectorised version)."""
    rng = np.random.default_rng(seed)
    s, r, n = len(m), len(b), m.shape[1]
    rows_m = [rng.integers(0, s, s) for _ in range(n_boot)]
    rows_b = [rng.integers(0, r, r) for _ in range(n_boot)]
    items = [rng.integers(0, n, n) for _ in range(n_boot)]
    return np.array([m[np.ix_(rm, it)].mean() - b[np.ix_(rb, it)].mean()
                     for rm, rb, it in zip(rows_m, rows_b, items, strict=True)])


def test_two_level_matches_a_brute_force_loop():
    rng = np.random.default_rng(1)
    m, b = rng.normal(1.0, 0.3, (3, 40)), rng.normal(1.1, 0.3, (5, 40))
    got = two_level_difference(m, b, n_boot=300, seed=7)
    draws = _brute(m, b, 300, 7)
    assert got["diff"] == pytest.approx(m.mean() - b.mean())
    assert got["low"] == pytest.approx(np.percentile(draws, 2.5)) and got["high"] == pytest.approx(np.percentile(draws, 97.5))
    assert got["p_le_0"] == pytest.approx((draws <= 0).mean())


def test_seed_noise_widens_the_interval_and_an_items_only_ci_would_be_overconfident():
    """Per-seed offsets shared by every item (training noise): the items-only interval misses the truth (0 here)
    far more often than the two-level one."""
    rng = np.random.default_rng(0)
    miss_two, miss_items = 0, 0
    for _ in range(60):
        items = rng.normal(2.0, 0.5, 60)                                  # item difficulty, shared by all cells
        m = items + rng.normal(0, 0.05, (3, 1)) + rng.normal(0, 0.02, (3, 60))
        b = items + rng.normal(0, 0.05, (5, 1)) + rng.normal(0, 0.02, (5, 60))
        two = two_level_difference(m, b, n_boot=400, seed=1)
        d = m.mean(0) - b.mean(0)                                         # items-only: seeds averaged first
        draws = d[rng.integers(0, 60, (400, 60))].mean(1)
        lo, hi = np.percentile(draws, [2.5, 97.5])
        miss_two += not two["low"] <= 0 <= two["high"]
        miss_items += not lo <= 0 <= hi
    assert miss_items > 3 * max(miss_two, 1) and miss_two <= 12


def test_a_real_difference_is_found_and_named():
    rng = np.random.default_rng(3)
    items = rng.normal(2.0, 0.5, 80)
    m = items - 0.2 + rng.normal(0, 0.01, (3, 80))
    b = items + rng.normal(0, 0.01, (5, 80))
    got = two_level_difference(m, b, n_boot=500)
    assert got["high"] < 0 and got["verdict"] == "better" and got["p_le_0"] == 1.0


def test_different_items_are_an_error():
    with pytest.raises(ValueError, match="different items"):
        two_level_difference(np.zeros((2, 3)), np.zeros((2, 4)))


def test_share_beaten():
    assert share_beaten(1.0, [0.5, 1.5, 2.0, 1.0]) == pytest.approx((2 + 0.5) / 4)
    assert share_beaten(3.0, [1, 2]) == 0.0 and share_beaten(0.0, [1, 2]) == 1.0
    assert np.isnan(share_beaten(1.0, []))


def _brute_weighted(m, b, w, n_boot, seed):
    """Per-token means by hand: each resample sums the resampled items' NLL (loss x tokens) over their tokens."""
    rng = np.random.default_rng(seed)
    s, r, n = len(m), len(b), m.shape[1]
    rows_m = [rng.integers(0, s, s) for _ in range(n_boot)]
    rows_b = [rng.integers(0, r, r) for _ in range(n_boot)]
    items = [rng.integers(0, n, n) for _ in range(n_boot)]
    out = []
    for rm, rb, it in zip(rows_m, rows_b, items, strict=True):
        per_m = [(m[k, it] * w[it]).sum() / w[it].sum() for k in rm]
        per_b = [(b[k, it] * w[it]).sum() / w[it].sum() for k in rb]
        out.append(np.mean(per_m) - np.mean(per_b))
    return np.array(out)


def test_weighted_two_level_is_the_per_token_difference_and_matches_a_brute_force_loop():
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, 300, 30).astype(float)
    m, b = rng.normal(1.0, 0.3, (3, 30)), rng.normal(1.1, 0.3, (5, 30))
    got = two_level_difference(m, b, n_boot=300, seed=7, weights=tokens)
    nll_m, nll_b = (m * tokens).sum(1), (b * tokens).sum(1)        # per cell: summed NLL / summed tokens
    assert got["diff"] == pytest.approx(nll_m.mean() / tokens.sum() - nll_b.mean() / tokens.sum(), abs=1e-12)
    draws = _brute_weighted(m, b, tokens, 300, 7)
    assert got["low"] == pytest.approx(np.percentile(draws, 2.5)) and got["high"] == pytest.approx(np.percentile(draws, 97.5))
    assert got["p_le_0"] == pytest.approx((draws <= 0).mean()) and got["p_ge_0"] == pytest.approx((draws >= 0).mean())
    assert got["p"] == pytest.approx(max(min(1, 2 * min((draws <= 0).mean(), (draws >= 0).mean())), 1 / 300))
    # equal weights give the unweighted result exactly
    plain, ones = two_level_difference(m, b, n_boot=300, seed=7), two_level_difference(m, b, n_boot=300, seed=7,
                                                                                      weights=np.full(30, 4.0))
    assert plain["low"] == pytest.approx(ones["low"]) and plain["diff"] == pytest.approx(ones["diff"])


def test_a_metric_without_direction_gets_higher_or_lower():
    assert verdict(0.1, 0.3, lower_is_better=None) == "higher" and verdict(-0.3, -0.1, lower_is_better=None) == "lower"
    assert verdict(-0.1, 0.3, lower_is_better=None) == NO_DIFFERENCE


def test_bh_qvalues_against_the_definition():
    from siftlm.stats import bh_qvalues

    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan, 0.005])
    finite = p[np.isfinite(p)]
    m = len(finite)
    order = np.argsort(finite)
    ranked = finite[order] * m / np.arange(1, m + 1)
    want_sorted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1)      # q_(i) = min_{j >= i} p_(j) m / j
    want = np.empty(m)
    want[order] = want_sorted
    got = bh_qvalues(p)
    assert np.isnan(got[4]) and got[np.isfinite(p)] == pytest.approx(want)
    assert got[5] == pytest.approx(0.005 * 5 / 1) and got[3] == pytest.approx(0.20)

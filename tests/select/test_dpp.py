"""Greedy MAP against a brute-force greedy that recomputes log-determinants with numpy."""

import numpy as np
import pytest
import torch

from siftlm.select.dpp import greedy_map, quality_weights


def rbf(x, gamma):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-gamma * d2)


def brute_force(x, m, gamma, quality=None, lam=0.0):
    """Obviously correct greedy: try every remaining item, keep the largest log det of L_S."""
    L = rbf(x, gamma)
    w = quality_weights(quality, lam)
    if w is not None:
        L = w[:, None] * L * w[None, :]
    picked = []
    for _ in range(m):
        best, best_val = None, -np.inf
        for i in range(len(x)):
            if i in picked:
                continue
            s = picked + [i]
            sign, val = np.linalg.slogdet(L[np.ix_(s, s)])
            if sign > 0 and val > best_val + 1e-12:
                best, best_val = i, val
        picked.append(best)
    return picked, L


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7, 0.9])
def test_same_picks_in_the_same_order_as_brute_force(seed, lam):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 5)) * 0.5  # kernel values ~0.5: correlated items, no near-ties
    q = rng.standard_normal(40) * 3 + 1 if lam else None
    want, L = brute_force(x, 12, 0.3, q, lam)
    for dtype in (torch.float64, torch.float32):
        got = greedy_map(x, 12, gamma=0.3, quality=q, lam=lam, dtype=dtype)
        assert got.order.tolist() == want and got.stopped is None
    got = greedy_map(x, 12, gamma=0.3, quality=q, lam=lam, dtype=torch.float64)
    # marginal gains add up to the log determinant of the selected kernel
    sign, logdet = np.linalg.slogdet(L[np.ix_(want, want)])
    assert sign > 0 and got.gains.sum() == pytest.approx(logdet, abs=1e-8)


def test_singular_kernel_stops_and_says_why():
    x = np.repeat(np.random.default_rng(0).standard_normal((3, 4)), 5, axis=0)  # 3 distinct points, 15 rows
    res = greedy_map(x, 10, gamma=1.0, dtype=torch.float64)
    assert len(res.order) == 3 and res.requested == 10
    assert "singular after 3 of 10 picks" in res.stopped


def test_checkpoint_resume_gives_the_same_result(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 8))
    clean = greedy_map(x, 30, gamma=0.2)
    import siftlm.select.dpp as dpp

    real_save, calls = dpp._save, {"n": 0}

    def crash_after_two_saves(*a, **k):
        real_save(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(dpp, "_save", crash_after_two_saves)
    with pytest.raises(KeyboardInterrupt):
        greedy_map(x, 30, gamma=0.2, checkpoint=tmp_path / "ck", checkpoint_every=7)
    monkeypatch.setattr(dpp, "_save", real_save)
    resumed = greedy_map(x, 30, gamma=0.2, checkpoint=tmp_path / "ck", checkpoint_every=7)
    assert resumed.order.tolist() == clean.order.tolist()
    np.testing.assert_allclose(resumed.gains, clean.gains, atol=1e-5)
    with pytest.raises(RuntimeError, match="other settings"):
        greedy_map(x, 30, gamma=0.5, checkpoint=tmp_path / "ck")
    with pytest.raises(RuntimeError, match="other settings"):               # other features, same shape
        greedy_map(x[::-1].copy(), 30, gamma=0.2, checkpoint=tmp_path / "ck")
    with pytest.raises(RuntimeError, match="other settings"):               # same features, a quality score
        greedy_map(x, 30, gamma=0.2, quality=rng.standard_normal(200), lam=0.5, checkpoint=tmp_path / "ck")

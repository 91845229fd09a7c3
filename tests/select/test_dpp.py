"""Greedy MAP against a brute-force greedy that recomputes log-determinants with numpy."""

import json

import numpy as np
import pytest
import torch

from siftlm.select.dpp import greedy_map


def rbf(x, gamma):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-gamma * d2)


def paper_kernel(x, gamma, quality=None, lam=0.0):
    """The DPP paper's L = diag(e^{beta q}) K diag(e^{beta q}), beta = lambda / (2 (1 - lambda)), q as given."""
    L = rbf(x, gamma)
    if quality is not None and lam:
        w = np.exp(lam / (2 * (1 - lam)) * np.asarray(quality))
        L = w[:, None] * L * w[None, :]
    return L


def brute_force(x, m, gamma, quality=None, lam=0.0):
    """Obviously correct greedy: try every remaining item, keep the largest log det of L_S."""
    L = paper_kernel(x, gamma, quality, lam)
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
    for dtype in ("float64", "float32"):
        got = greedy_map(x, 12, gamma=0.3, quality=q, lam=lam, dtype=dtype)
        assert got.order.tolist() == want and got.stopped is None
    got = greedy_map(x, 12, gamma=0.3, quality=q, lam=lam)
    assert got.settings["dtype"] == "float64"                  # the default where memory allows
    # marginal gains add up to the log determinant of the selected kernel
    sign, logdet = np.linalg.slogdet(L[np.ix_(want, want)])
    assert sign > 0 and got.gains.sum() == pytest.approx(logdet, abs=1e-8)


def test_quality_is_used_as_given_and_standardising_is_an_option():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 5)) * 0.5
    q = rng.standard_normal(40) * 0.4 + 3                     # a score on its own scale
    raw = greedy_map(x, 10, gamma=0.3, quality=q, lam=0.3)
    assert raw.order.tolist() == brute_force(x, 10, 0.3, q, 0.3)[0]
    z = (q - q.mean()) / q.std()
    std = greedy_map(x, 10, gamma=0.3, quality=q, lam=0.3, standardize=True)
    assert std.order.tolist() == brute_force(x, 10, 0.3, z, 0.3)[0] and std.order.tolist() != raw.order.tolist()


def test_large_quality_values_do_not_overflow_and_gains_are_the_papers_log_det():
    """#output tokens as quality at lambda = 0.9 (the paper's setting): e^{4.5 * 700} overflows float64, the picks
    and log det L_S = log det K_S + 2 beta sum q_S (closed form) must not."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((60, 8)) * 0.3
    q = rng.integers(10, 700, 60).astype(float)
    res = greedy_map(x, 8, gamma=0.5, quality=q, lam=0.9)
    assert res.stopped is None and np.isfinite(res.gains).all()
    beta = 0.9 / (2 * 0.1)
    ks = rbf(x, 0.5)[np.ix_(res.order, res.order)]
    assert res.gains.sum() == pytest.approx(np.linalg.slogdet(ks)[1] + 2 * beta * q[res.order].sum(), rel=1e-10)
    K, picked = rbf(x, 0.5), []                                # brute force on log det K_S + 2 beta sum q_S
    for _ in range(8):
        cands = [i for i in range(60) if i not in picked]
        vals = [np.linalg.slogdet(K[np.ix_(picked + [i], picked + [i])])[1] + 2 * beta * q[picked + [i]].sum()
                for i in cands]
        picked.append(cands[int(np.argmax(vals))])
    assert res.order.tolist() == picked


def test_singular_kernel_stops_and_says_why():
    x = np.repeat(np.random.default_rng(0).standard_normal((3, 4)), 5, axis=0)  # 3 distinct points, 15 rows
    res = greedy_map(x, 10, gamma=1.0, dtype=torch.float64)
    assert len(res.order) == 3 and res.requested == 10
    assert "singular after 3 of 10 picks" in res.stopped


@pytest.mark.parametrize("crash_after_saves", [1, 2, 3])
def test_resume_after_a_crash_makes_exactly_the_uninterrupted_picks(tmp_path, monkeypatch, crash_after_saves):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 8)) / np.sqrt(8)            # random directions: many near-ties
    q = rng.standard_normal(300)
    clean = greedy_map(x, 30, gamma=0.2, quality=q, lam=0.4)
    import siftlm.select.dpp as dpp

    real_save, calls = dpp._save, {"n": 0}

    def crash(*a, **k):
        real_save(*a, **k)
        calls["n"] += 1
        if calls["n"] == crash_after_saves:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(dpp, "_save", crash)
    with pytest.raises(KeyboardInterrupt):
        greedy_map(x, 30, gamma=0.2, quality=q, lam=0.4, checkpoint=tmp_path / "ck", checkpoint_every=7)
    monkeypatch.setattr(dpp, "_save", real_save)
    resumed = greedy_map(x, 30, gamma=0.2, quality=q, lam=0.4, checkpoint=tmp_path / "ck", checkpoint_every=7)
    assert resumed.order.tolist() == clean.order.tolist()
    assert np.array_equal(resumed.gains, clean.gains)          # bit for bit: the residuals were restored, not redone


def test_a_checkpoint_serves_smaller_budgets_and_continues_for_larger_ones(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 8))
    greedy_map(x, 30, gamma=0.2, checkpoint=tmp_path / "ck")
    import siftlm.select.dpp as dpp

    monkeypatch.setattr(dpp.torch, "sqrt", lambda *a: pytest.fail("a prefix must not be recomputed"))
    small = greedy_map(x, 10, gamma=0.2, checkpoint=tmp_path / "ck")
    monkeypatch.undo()
    assert small.order.tolist() == greedy_map(x, 10, gamma=0.2).order.tolist()
    larger = greedy_map(x, 45, gamma=0.2, checkpoint=tmp_path / "ck")
    clean = greedy_map(x, 45, gamma=0.2)
    assert larger.order.tolist() == clean.order.tolist() and np.array_equal(larger.gains, clean.gains)
    with pytest.raises(RuntimeError, match=r"holds a DPP checkpoint with gamma 0.2 \(now 0.5\)"):
        greedy_map(x, 30, gamma=0.5, checkpoint=tmp_path / "ck")
    with pytest.raises(RuntimeError, match="with other features or quality scores"):   # other features, same shape
        greedy_map(x[::-1].copy(), 30, gamma=0.2, checkpoint=tmp_path / "ck")
    with pytest.raises(RuntimeError, match="other features or quality scores; lambda 0"):   # a quality score
        greedy_map(x, 30, gamma=0.2, quality=rng.standard_normal(200), lam=0.5, checkpoint=tmp_path / "ck")


KILLED = """
import os, signal, sys
import numpy as np
import siftlm.select.dpp as dpp
folder, after = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)
x, q = rng.standard_normal((400, 16)) / 4, rng.standard_normal(400)
real, n = dpp._save, [0]
def dying(*a, **k):
    real(*a, **k)
    n[0] += 1
    if n[0] == after:
        os.kill(os.getpid(), signal.SIGKILL)
dpp._save = dying
dpp.greedy_map(x, 60, gamma=0.5, quality=q, lam=0.3, checkpoint=folder, checkpoint_every=9)
"""


KILLED_BETWEEN = """
import os, signal, sys
import numpy as np
import siftlm.select.dpp as dpp
folder, after = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)
x, q = rng.standard_normal((400, 16)) / 4, rng.standard_normal(400)
real, n = dpp.atomic_write, [0]
def dying(path):                       # killed after the residuals of save `after` are in place, before its state.json
    if str(path).endswith("state.json"):
        n[0] += 1
        if n[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path)
dpp.atomic_write = dying
dpp.greedy_map(x, 60, gamma=0.5, quality=q, lam=0.3, checkpoint=folder, checkpoint_every=9)
"""


@pytest.mark.parametrize("script, after", [(KILLED, 1), (KILLED, 4), (KILLED_BETWEEN, 1), (KILLED_BETWEEN, 3)],
                         ids=["after-save-1", "after-save-4", "before-state-1", "before-state-3"])
def test_kill_9_mid_selection_then_resume_gives_identical_picks(tmp_path, script, after):
    """Killed after a checkpoint, or between its residuals and its state.json: the resumed run makes the same picks."""
    from tests.conftest import run_killed

    run_killed(tmp_path, script, tmp_path / "ck", after)
    rng = np.random.default_rng(7)
    x, q = rng.standard_normal((400, 16)) / 4, rng.standard_normal(400)
    resumed = greedy_map(x, 60, gamma=0.5, quality=q, lam=0.3, checkpoint=tmp_path / "ck", checkpoint_every=9)
    clean = greedy_map(x, 60, gamma=0.5, quality=q, lam=0.3)
    assert resumed.order.tolist() == clean.order.tolist() and np.array_equal(resumed.gains, clean.gains)
    assert len(list((tmp_path / "ck").glob("d2*.npy"))) == 1                  # earlier residuals cleaned up


def test_a_full_disk_during_a_checkpoint_leaves_only_the_last_good_state(tmp_path, monkeypatch):
    import errno

    import siftlm.select.dpp as dpp

    rng = np.random.default_rng(5)
    x = rng.standard_normal((120, 8))
    real, n = dpp.atomic_write, {"k": 0}

    def full(path):
        if str(path).endswith("state.json"):
            n["k"] += 1
            if n["k"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path)

    monkeypatch.setattr(dpp, "atomic_write", full)
    with pytest.raises(OSError, match="No space"):
        greedy_map(x, 30, gamma=0.2, checkpoint=tmp_path / "ck", checkpoint_every=10)
    state = json.loads((tmp_path / "ck" / "state.json").read_text())
    assert len(state["order"]) == 10                                          # the first save, intact
    assert (tmp_path / "ck" / "rows.bin").stat().st_size == 10 * 120 * 8      # no partial rows (float64)
    kept = {"rows.bin", "state.json", "siftlm-identity.json"}
    assert [p.name for p in (tmp_path / "ck").iterdir() if p.name not in kept] == [state["d2"]]
    monkeypatch.undo()
    resumed = greedy_map(x, 30, gamma=0.2, checkpoint=tmp_path / "ck", checkpoint_every=10)
    assert resumed.order.tolist() == greedy_map(x, 30, gamma=0.2).order.tolist()


def test_a_finished_selection_removes_its_checkpoint_unless_asked_to_keep_it(tmp_path):
    import pandas as pd

    from siftlm.config import SelectConfig
    from siftlm.select.run import run_selection

    rng = np.random.default_rng(0)
    ids = [f"e{i}" for i in range(40)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": i, "instruction": f"q {i}", "output": f"a {i}"}) + "\n" for i in ids))
    pd.DataFrame({"id": ids}).to_parquet(tmp_path / "s.parquet")
    np.save(tmp_path / "f.npy", rng.standard_normal((40, 8)))
    for keep in (False, True):
        cfg = SelectConfig(scores=str(tmp_path / "s.parquet"), data=str(data), method="dpp", budget=10,
                           features=str(tmp_path / "f.npy"), keep_checkpoint=keep)
        run_selection(cfg, tmp_path / f"out-{keep}")
        assert (tmp_path / f"out-{keep}" / "dpp-checkpoint").exists() == keep

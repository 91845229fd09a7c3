import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from siftlm.signals.store import PassSpec, compute_pass, is_complete, load_pass, pass_dir, shard_bounds

IDS = [f"e{i}" for i in range(10)]


def _compute(calls):
    def compute(start, stop):
        calls.append(start)
        return {"x": np.arange(start, stop, dtype=float) ** 2}
    return compute


def test_rerun_skips_done_shards_and_resumes(tmp_path):
    spec = PassSpec("loss", "d1", "m1", {"a": 1})
    calls = []

    def failing(start, stop):
        if start == 6:
            raise RuntimeError("crash")
        return _compute(calls)(start, stop)

    with pytest.raises(RuntimeError):
        compute_pass(tmp_path, spec, IDS, failing, bounds=shard_bounds([1] * 10, size=3))
    assert calls == [0, 3] and not is_complete(tmp_path, spec)
    calls.clear()
    out = compute_pass(tmp_path, spec, IDS, _compute(calls), bounds=shard_bounds([1] * 10, size=3))
    assert calls == [6, 9]  # only the unfinished shards
    assert list(out["id"]) == IDS and list(out["x"]) == [float(i * i) for i in range(10)]
    assert is_complete(tmp_path, spec)
    pd.testing.assert_frame_equal(load_pass(tmp_path, spec), out)
    assert not list(pass_dir(tmp_path, spec).glob("*.tmp*"))


def test_changed_settings_get_a_new_key(tmp_path):
    a = PassSpec("loss", "d1", "m1", {"max_length": 512})
    b = PassSpec("loss", "d1", "m1", {"max_length": 1024})
    assert a.key != b.key and pass_dir(tmp_path, a) != pass_dir(tmp_path, b)
    with pytest.raises(FileNotFoundError, match="not complete"):
        load_pass(tmp_path, b)


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from siftlm.data import read_dataset
    from siftlm.models.load import load_model
    from siftlm.config import SignalConfig
    from siftlm.signals import passes
    from siftlm.signals.passes import run_pass
    from siftlm.signals.prepare import prepare
    data, model_dir, store, kill_after = sys.argv[1:5]
    lm = load_model(model_dir, device="cpu")
    prep = prepare(read_dataset(data), lm.tokenizer, SignalConfig(store=store, shard_size=5, progress=False))
    real, n = passes.loss_pass, [0]
    def dying(*a, **k):
        if n[0] == int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)
        n[0] += 1
        return real(*a, **k)
    passes.loss_pass = dying
    run_pass(prep, "loss", lm).to_parquet(sys.argv[5])
""")


def test_kill_9_mid_pass_then_rerun_gives_identical_results(tmp_path, model_dir, alpaca_file):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(store, kill_after):
        return subprocess.run([sys.executable, str(script), str(alpaca_file), str(model_dir), str(store),
                               str(kill_after), str(tmp_path / "out.parquet")], env=env, capture_output=True)

    killed = run(tmp_path / "s1", 2)                 # dies while computing the third shard
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert len(list((tmp_path / "s1").glob("*/shard-*.done"))) == 2
    assert run(tmp_path / "s1", 99).returncode == 0
    resumed = pd.read_parquet(tmp_path / "out.parquet")
    assert run(tmp_path / "s2", 99).returncode == 0
    clean = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(resumed, clean)


def test_shards_are_sized_by_tokens_or_by_count():
    assert shard_bounds([10] * 7, size=3) == [[0, 3], [3, 6], [6, 7]]
    assert shard_bounds([5, 5, 30, 1, 1, 1, 40, 2], target=10) == [[0, 2], [2, 3], [3, 7], [7, 8]]
    assert shard_bounds([3, 3], target=100) == [[0, 2]] and shard_bounds([], target=5) == [[0, 0]]


def test_a_small_dataset_gets_several_shards_so_a_killed_run_resumes(tmp_path, tokenizer, alpaca_file):
    from siftlm.config import SignalConfig
    from siftlm.data import read_dataset
    from siftlm.signals.passes import _weights
    from siftlm.signals.prepare import prepare

    prep = prepare(read_dataset(alpaca_file), tokenizer, SignalConfig(shard_tokens=500, progress=False))
    bounds = shard_bounds(_weights(prep), target=500)
    tokens = [sum(len(e.input_ids) for e in prep.encoded[a:b]) for a, b in bounds]
    assert len(bounds) > 3 and all(t >= 500 for t in tokens[:-1])           # 24 examples, not one shard of 512


LOCKED = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from siftlm.signals.store import PassSpec, compute_pass, shard_bounds
    root, log = sys.argv[1:3]
    ids = [f"e{i}" for i in range(8)]
    def compute(start, stop):
        with open(log, "a") as f:
            f.write(f"{start} {os.getpid()}\\n")
        time.sleep(0.4)
        return {"x": np.arange(start, stop, dtype=float)}
    out = compute_pass(root, PassSpec("p", "d", "m", {}), ids, compute, bounds=shard_bounds([1] * 8, size=1))
    print(out["x"].tolist())
""")


def test_two_processes_on_one_store_compute_each_shard_once(tmp_path):
    script = tmp_path / "locked.py"
    script.write_text(LOCKED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "st"), str(tmp_path / "log")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    assert outs[0][0] == outs[1][0] and "[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]" in outs[0][0]
    computed = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert sorted(int(s) for s, _ in computed) == list(range(8))              # no shard twice
    assert len({pid for _, pid in computed}) == 2                              # and both did some of the work


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    import json
    import socket

    spec = PassSpec("p", "d", "m", {})
    folder = pass_dir(tmp_path, spec)
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / "shard-00000.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    calls = []
    out = compute_pass(tmp_path, spec, IDS, _compute(calls))
    assert calls == [0] and len(out) == 10 and not (folder / "shard-00000.lock").exists()


def test_an_empty_lock_left_by_an_older_siftlm_is_taken_over(tmp_path):
    spec = PassSpec("p", "d", "m", {})
    folder = pass_dir(tmp_path, spec)
    folder.mkdir(parents=True)
    (folder / "shard-00000.lock").write_text("")          # killed between creating the lock and writing its owner
    calls = []
    out = compute_pass(tmp_path, spec, IDS, _compute(calls))
    assert calls == [0] and len(out) == 10 and not (folder / "shard-00000.lock").exists()


LINK_KILLED = """
import os, signal, sys
import siftlm.keyed as keyed
import siftlm.signals.store as store
real = os.link
def dying(src, dst):                   # the owner is written; killed before the lock appears
    if str(dst).endswith(".lock"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
keyed.os.link = dying
store.compute_pass(sys.argv[1], store.PassSpec("p", "d", "m", {}), [f"e{i}" for i in range(10)],
                   lambda a, b: {"x": list(range(a, b))})
"""


def test_kill_9_while_taking_a_lock_leaves_no_lock_and_no_temporaries(tmp_path):
    from tests.conftest import run_killed

    run_killed(tmp_path, LINK_KILLED, tmp_path)
    spec = PassSpec("p", "d", "m", {})
    folder = pass_dir(tmp_path, spec)
    assert not (folder / "shard-00000.lock").exists() and list(folder.glob(".*.tmp"))   # only the orphan temp
    calls = []
    out = compute_pass(tmp_path, spec, IDS, _compute(calls))
    assert calls == [0] and len(out) == 10 and not list(folder.glob(".*"))              # orphan cleared


def test_a_full_disk_leaves_no_partial_shard(tmp_path, monkeypatch):
    import errno

    spec = PassSpec("p", "d", "m", {})

    def full(self, path, *a, **k):
        open(path, "wb").write(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(OSError, match="No space"):
        compute_pass(tmp_path, spec, IDS, _compute([]))
    folder = pass_dir(tmp_path, spec)
    assert sorted(p.name for p in folder.iterdir()) == ["siftlm-identity.json"]


def test_a_lock_whose_pid_was_reused_is_taken_over(tmp_path):
    """A restarted container reuses small pids: a lock naming a live pid that started at another time is stale."""
    import json
    import socket

    spec = PassSpec("p", "d", "m", {})
    folder = pass_dir(tmp_path, spec)
    folder.mkdir(parents=True)
    (folder / "shard-00000.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                         "started": "another-boot:1"}))
    calls = []
    out = compute_pass(tmp_path, spec, IDS, _compute(calls))
    assert calls == [0] and len(out) == 10


def _plant_lock(tmp_path, spec, owner):
    """A lock on shard 0 of a fresh pass folder, as another process (or another host) leaves it."""
    import json

    from siftlm.signals.store import open_pass, shard

    keyed = open_pass(tmp_path, spec, len(IDS), shard_bounds([1] * 10, size=5))
    lock = keyed.folder / f"{shard(0)}.lock"
    lock.write_text(json.dumps(owner))
    return lock


def test_a_shard_locked_by_another_host_is_said_with_who_and_since_when(tmp_path, monkeypatch):
    """A lock naming another host cannot be checked from here: the wait says who holds it, since when and how to
    clear it, instead of waiting in silence (here the other node finishes, i.e. its lock goes, once it was said)."""
    import threading
    import time

    from siftlm.signals import store

    spec = PassSpec("loss", "d1", "m1", {})
    lock = _plant_lock(tmp_path, spec, {"host": "node-b", "pid": 4242, "time": time.time() - 90})
    said, result = [], []
    monkeypatch.setattr(store, "POLL_S", 0.01)
    monkeypatch.setattr(store, "NOTICE_S", 0.0, raising=False)
    monkeypatch.setattr(store, "_say", said.append, raising=False)
    run = threading.Thread(target=lambda: result.append(compute_pass(tmp_path, spec, IDS, _compute([]),
                                                                     bounds=shard_bounds([1] * 10, size=5))),
                           daemon=True)
    run.start()
    for _ in range(500):
        if said:
            break
        time.sleep(0.01)
    if not said:
        lock.unlink()                                   # let the silent wait end before failing
    assert said and not result, said
    assert "locked by pid 4242 on node-b since" in said[0] and re.search(r"\(9\d s ago\)", said[0]), said[0]
    assert f"remove {lock}" in said[0] and "--lock-timeout" in said[0]
    lock.unlink()
    run.join(10)
    assert not run.is_alive() and list(result[0]["x"]) == [float(i * i) for i in range(10)]
    assert len(said) == 1                                                   # said once, not at every poll


def test_a_lock_older_than_the_lock_timeout_is_taken_over(tmp_path, monkeypatch):
    """A node that died leaves its lock for good (its host cannot be checked): past --lock-timeout this process takes
    the shard over and computes it; a younger lock is waited for."""
    import time

    from siftlm.signals import store

    spec = PassSpec("loss", "d1", "m1", {})
    _plant_lock(tmp_path, spec, {"host": "node-b", "pid": 4242, "time": time.time() - 3600})
    said, calls = [], []
    monkeypatch.setattr(store, "POLL_S", 0.01)
    monkeypatch.setattr(store, "_say", said.append, raising=False)
    out = compute_pass(tmp_path, spec, IDS, _compute(calls), bounds=shard_bounds([1] * 10, size=5), lock_timeout=600)
    assert list(out["x"]) == [float(i * i) for i in range(10)] and sorted(calls) == [0, 5]
    assert len(said) == 1 and "locked by pid 4242 on node-b" in said[0] and "longer than --lock-timeout 600 s" in said[0]

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from siftlm.signals.store import PassSpec, is_complete, load_pass, pass_dir, run_pass

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
        run_pass(tmp_path, spec, IDS, failing, shard_size=3)
    assert calls == [0, 3] and not is_complete(tmp_path, spec)
    calls.clear()
    out = run_pass(tmp_path, spec, IDS, _compute(calls), shard_size=3)
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
    run_pass(prep, "loss", lm.model, lm.fingerprint).to_parquet(sys.argv[5])
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

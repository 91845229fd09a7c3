"""The compute precision: the auto choice, bf16 passes against fp32 ones, fp32 where numbers need it."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from siftlm.config import SignalConfig, TrainConfig
from siftlm.data import read_dataset
from siftlm.models import precision
from siftlm.models.batching import collate
from siftlm.models.forward import logits, parts, response_hidden
from siftlm.models.load import load_model
from siftlm.signals.passes import pass_spec, run_pass
from siftlm.signals.prepare import prepare
from siftlm.train.reference import train_reference


@pytest.fixture
def unpinned(monkeypatch, tmp_path):
    """``auto`` as on a user's machine: no pin, a cache of its own, the CPU's flags and the probe as the test says."""
    monkeypatch.delenv(precision.PIN_ENV, raising=False)
    monkeypatch.setenv("SIFTLM_CACHE", str(tmp_path / "cache"))
    return monkeypatch


def test_auto_picks_bf16_only_where_it_is_fast(unpinned):
    monkeypatch = unpinned
    monkeypatch.setattr(precision, "_amx", lambda: True)
    p = precision.choose("auto", "cpu")
    assert p.compute == torch.bfloat16 and "AMX" in p.reason
    timed = []
    monkeypatch.setattr(precision, "bf16_speedup", lambda: timed.append(1) or 0.3)
    monkeypatch.setattr(precision, "_amx", lambda: False)
    monkeypatch.setattr(precision, "_avx512_bf16", lambda: False)             # emulated bf16: fp32, no timing
    p = precision.choose("auto", "cpu")
    assert p.compute == torch.float32 and "neither AMX nor AVX-512 BF16" in p.reason and not timed
    monkeypatch.setattr(precision, "_avx512_bf16", lambda: True)              # native bf16 without AMX: time it
    p = precision.choose("auto", "cpu")
    assert p.compute == torch.float32 and "median 0.30x" in p.reason and "AVX-512 BF16" in p.reason
    assert len(timed) == precision.PROBE_SAMPLES and "measured now, kept in" in p.reason
    monkeypatch.setattr(precision, "bf16_speedup", lambda: timed.append(1) or 2.4)
    p = precision.choose("auto", "cpu")                                        # kept: no timing, the same answer
    assert p.compute == torch.float32 and len(timed) == precision.PROBE_SAMPLES and "measured 20" in p.reason
    assert precision.cpu_decision(refresh=True)["bf16"] is True               # siftlm models --probe
    assert precision.choose("auto", "cpu").compute == torch.bfloat16
    monkeypatch.setattr(precision, "_avx512_bf16", lambda: None)              # no AMX, bf16 flag unknown: the decision
    p = precision.choose("auto", "cpu")
    assert p.compute == torch.bfloat16 and "torch does not report AVX-512 BF16" in p.reason
    monkeypatch.setenv(precision.PIN_ENV, "float32")
    assert precision.choose("auto", "cpu").reason == f"auto: float32, pinned by {precision.PIN_ENV}"
    assert precision.choose("bfloat16").compute == torch.bfloat16 and precision.choose("float32").reason == "float32 as asked"
    with pytest.raises(ValueError, match="unknown dtype 'fp16'"):
        precision.choose("fp16")


def test_the_median_decides_not_one_timing(unpinned):
    ratios = iter([0.1, 2.0, 31.9, 1.9, 0.2, 2.2, 1.8])                        # a busy machine: two wild timings
    unpinned.setattr(precision, "bf16_speedup", lambda: next(ratios))
    d = precision.probe()
    assert d["median"] == 1.9 and len(d["ratios"]) == precision.PROBE_SAMPLES


def test_two_processes_agree_even_when_the_probe_flips(unpinned, tmp_path):
    """Two separate processes decide `auto` with the probe injected to time bf16 fast in the first and slow in the
    second: the second reads the first's kept decision, so both pick bf16 (the store keys agree)."""
    import os
    import subprocess
    import sys

    script = ("import sys, torch; from siftlm.models import precision as p; "
              "p._amx = lambda: False; p._avx512_bf16 = lambda: True; "
              "p.bf16_speedup = lambda: float(sys.argv[1]); print(p.choose('auto', 'cpu').name)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first, second = (subprocess.run([sys.executable, "-c", script, r], env=env, capture_output=True, text=True)
                     for r in ("3.0", "0.2"))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == second.stdout.strip() == "bfloat16"
    kept = list((tmp_path / "cache" / "precision").glob("cpu-*.json"))
    assert len(kept) == 1 and '"median": 3.0' in kept[0].read_text()


def test_the_first_kept_decision_wins_a_race(unpinned, tmp_path):
    path = precision.decision_path()
    a = precision._store_first(path, {"bf16": True, "who": "a"}, replace=False)
    b = precision._store_first(path, {"bf16": False, "who": "b"}, replace=False)
    assert a["who"] == b["who"] == "a" and not list(path.parent.glob(".*.tmp"))


def test_a_decision_stored_while_this_process_probes_is_read_not_overwritten(unpinned, tmp_path):
    """Two processes probe at once and disagree (one measured bf16 2.0x, the other 1.0x): the first to store its
    decision wins, and the later one reads it instead of replacing it after its own probe."""
    path = precision.decision_path()

    def slow_probe(samples=precision.PROBE_SAMPLES):      # the other process stores its decision meanwhile
        precision._store_first(path, {"bf16": True, "median": 2.0, "who": "first"}, replace=False)
        return {"ratios": [1.0] * samples, "median": 1.0}

    unpinned.setattr(precision, "probe", slow_probe)
    got = precision.cpu_decision()
    assert got["who"] == "first" and got["bf16"] is True and got["new"] is False
    assert '"who": "first"' in path.read_text()
    path.write_text("{not json")                           # a broken decision is measured again and replaced
    unpinned.setattr(precision, "probe", lambda samples=0: {"ratios": [1.0], "median": 1.0})
    assert precision.cpu_decision()["bf16"] is False and '"median": 1.0' in path.read_text()


def test_an_auto_run_reuses_a_pass_stored_in_the_other_precision(unpinned, tmp_path, model_dir, alpaca_file):
    from siftlm.signals.passes import stored

    bf16 = load_model(str(model_dir), device="cpu", dtype="bfloat16", quiet=True)
    prep = prepare(read_dataset(alpaca_file), bf16.tokenizer, SignalConfig(store=str(tmp_path / "st"), progress=False))
    first = run_pass(prep, "loss", bf16)
    unpinned.setenv(precision.PIN_ENV, "float32")                              # this machine now decides fp32
    auto = load_model(str(model_dir), device="cpu", dtype="auto", quiet=True)
    assert stored(prep, "loss", auto)
    from siftlm.signals import passes

    unpinned.setitem(passes.PASSES, "loss", passes.PASSES["loss"]._replace(bind=None))   # nothing may be computed
    again = run_pass(prep, "loss", auto)
    pd.testing.assert_frame_equal(again, first)
    exact = load_model(str(model_dir), device="cpu", dtype="float32", quiet=True)   # asked for fp32: its own key
    assert not stored(prep, "loss", exact)


def test_the_probe_times_real_matmuls():
    ratio = precision.bf16_speedup(n=128, reps=1)
    assert 0.01 < ratio < 100


def test_bf16_passes_agree_with_fp32_and_never_share_a_store_key(tmp_path, model_dir, alpaca_file):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        lm = load_model(str(model_dir), device="cpu", dtype=dtype)
        prep = prepare(read_dataset(alpaca_file), lm.tokenizer, SignalConfig(store=str(tmp_path / "st"), progress=False))
        runs[dtype] = (run_pass(prep, "loss", lm), pass_spec(prep, "loss", lm))
        batch = collate(prep.encoded, [0, 1], lm.tokenizer.pad_token_id)
        p = parts(lm.model)
        assert logits(p.head, response_hidden(lm.model, batch)[0], p.transform, lm.model).dtype == torch.float32
    (a, spec_a), (b, spec_b) = runs["float32"], runs["bfloat16"]
    assert spec_a.key != spec_b.key and spec_b.settings["dtype"] == "torch.bfloat16/autocast-bfloat16"
    assert spec_a.settings["dtype"] == "torch.float32"                        # fp32 keeps its old key
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=0.03)
    assert stats.spearmanr(a["loss"], b["loss"]).statistic > 0.99


@pytest.mark.parametrize("full", [False, True])
def test_bf16_training_keeps_fp32_master_weights_and_learns(tmp_path, model_dir, alpaca_file, full):
    lm = load_model(str(model_dir), device="cpu", dtype="bfloat16", master_fp32=full)
    prep = prepare(read_dataset(alpaca_file), lm.tokenizer, SignalConfig(store=str(tmp_path / "st"), progress=False))
    frames, _, _ = train_reference(lm, prep, tmp_path / "ref", TrainConfig(epochs=1, lr=5e-3 if not full else 1e-3,
                                                                        token_budget=512, full=full))
    assert frames[1]["loss"].mean() < frames[0]["loss"].mean()
    trained = [p for n, p in lm.model.named_parameters() if (full or "lora_" in n)]
    assert trained and all(p.dtype == torch.float32 for p in trained)       # master weights in fp32
    if not full:
        frozen = [p for n, p in lm.model.named_parameters() if "lora_" not in n]
        assert all(p.dtype == torch.bfloat16 for p in frozen)                # the frozen base in bf16

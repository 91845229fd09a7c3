"""The compute precision: the auto choice, bf16 passes against fp32 ones, fp32 where numbers need it."""

import numpy as np
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
from siftlm.signals.trajectory import train_reference


def test_auto_picks_bf16_only_where_it_is_fast(monkeypatch):
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
    assert p.compute == torch.float32 and "0.30x" in p.reason and "AVX-512 BF16" in p.reason and timed
    monkeypatch.setattr(precision, "bf16_speedup", lambda: 2.4)
    p = precision.choose("auto", "cpu")
    assert p.compute == torch.bfloat16 and "2.4x faster" in p.reason
    monkeypatch.setattr(precision, "_avx512_bf16", lambda: None)              # no AMX, bf16 flag unknown: time it
    p = precision.choose("auto", "cpu")
    assert p.compute == torch.bfloat16 and "torch does not report AVX-512 BF16" in p.reason
    monkeypatch.setattr(precision, "_amx", lambda: None)                      # torch does not say: time it
    assert precision.choose("auto", "cpu").compute == torch.bfloat16
    monkeypatch.setattr(precision, "bf16_speedup", lambda: 0.3)
    p = precision.choose("auto", "cpu")
    assert p.compute == torch.float32 and "0.30x" in p.reason
    assert precision.choose("bfloat16").compute == torch.bfloat16 and precision.choose("float32").reason == "float32 as asked"
    with pytest.raises(ValueError, match="unknown dtype 'fp16'"):
        precision.choose("fp16")


def test_the_probe_times_real_matmuls():
    ratio = precision.bf16_speedup.__wrapped__(n=128, reps=1)
    assert 0.01 < ratio < 100


def test_bf16_passes_agree_with_fp32_and_never_share_a_store_key(tmp_path, model_dir, alpaca_file):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        lm = load_model(str(model_dir), device="cpu", dtype=dtype)
        prep = prepare(read_dataset(alpaca_file), lm.tokenizer, SignalConfig(store=str(tmp_path / "st"), progress=False))
        runs[dtype] = (run_pass(prep, "loss", lm.model, lm.fingerprint), pass_spec(prep, "loss", lm.model, lm.fingerprint))
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
    frames, _ = train_reference(lm, prep, tmp_path / "ref", TrainConfig(epochs=1, lr=5e-3 if not full else 1e-3,
                                                                        token_budget=512, full=full))
    assert frames[1]["loss"].mean() < frames[0]["loss"].mean()
    trained = [p for n, p in lm.model.named_parameters() if (full or "lora_" in n)]
    assert trained and all(p.dtype == torch.float32 for p in trained)       # master weights in fp32
    if not full:
        frozen = [p for n, p in lm.model.named_parameters() if "lora_" not in n]
        assert all(p.dtype == torch.bfloat16 for p in frozen)                # the frozen base in bf16

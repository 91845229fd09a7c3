"""Passes over a LoRA model run with the adapters merged (siftlm.models.merge): the same per-example losses as the
unmerged adapters (1e-5 in fp32), the base weights bit for bit as they were afterwards, training unchanged by it."""

import contextlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

from siftlm.config import SignalConfig, TrainConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model
from siftlm.models.merge import has_unmerged, merged
from siftlm.models.precision import computing
from siftlm.signals import passes
from siftlm.signals.losses import loss_pass
from siftlm.signals.prepare import prepare
from siftlm.train.reference import train_reference
from tests.conftest import tiny_llama
from tests.signals.test_losses import _encoded


def _lora(tokenizer, seed=0, dtype=torch.float32):
    """The tiny model with a LoRA adapter whose B is random (peft's default B = 0 would make merging trivial)."""
    from peft import LoraConfig, get_peft_model

    base = tiny_llama(len(tokenizer), seed=seed).to(dtype)
    torch.manual_seed(seed + 1)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    return model.eval()


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def test_merged_losses_equal_unmerged_and_weights_come_back_exactly(tokenizer):
    model = _lora(tokenizer)
    enc = _encoded(tokenizer, 20)
    before = _snapshot(model)
    plain = loss_pass(model, enc, pad_id=tokenizer.pad_token_id, token_budget=300)
    assert has_unmerged(model)
    with merged(model) as m:
        assert m is model and all(layer.merged for layer in _lora_layers(model)) and not has_unmerged(model)
        with merged(model):                                   # nests: already merged, left alone
            fast = loss_pass(model, enc, pad_id=tokenizer.pad_token_id, token_budget=300)
    for k in plain:
        np.testing.assert_allclose(fast[k], plain[k], atol=1e-5, rtol=0)
    assert not any(layer.merged for layer in _lora_layers(model)) and has_unmerged(model)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)     # bit for bit: no W + d - d rounding left behind


def test_weights_come_back_when_the_pass_raises(tokenizer):
    model = _lora(tokenizer)
    before = _snapshot(model)
    with pytest.raises(KeyboardInterrupt), merged(model):
        raise KeyboardInterrupt
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    assert not any(layer.merged for layer in _lora_layers(model))


def test_disabled_adapters_and_plain_models_pass_through(tokenizer, model):
    lora = _lora(tokenizer)
    with lora.disable_adapter():                      # DPO's reference: the base, adapters off
        assert not has_unmerged(lora)
        with merged(lora):
            assert not any(layer.merged for layer in _lora_layers(lora))
    with merged(model) as m:
        assert m is model


def test_bf16_merged_losses_rank_like_unmerged(tokenizer):
    """bf16 rounds W + scale * B A once where the unmerged layer rounds two products: bf16's own level of difference."""
    model = _lora(tokenizer, dtype=torch.bfloat16)
    for layer in _lora_layers(model):              # trained adapters stay fp32 (siftlm.models.precision)
        for p in list(layer.lora_A.parameters()) + list(layer.lora_B.parameters()):
            p.data = p.data.float()
    enc = _encoded(tokenizer, 20)
    with computing(torch.bfloat16):                  # products in bf16, as a pass of a bf16 handle runs them
        plain = loss_pass(model, enc, pad_id=tokenizer.pad_token_id)["loss"]
        with merged(model):
            fast = loss_pass(model, enc, pad_id=tokenizer.pad_token_id)["loss"]
    assert np.median(np.abs(fast - plain) / plain) < 1e-2
    assert stats.spearmanr(plain, fast).statistic >= 0.99


def test_run_pass_merges_a_loaded_adapter(tmp_path, tokenizer, model_dir, alpaca_file, monkeypatch):
    lora = _lora(tokenizer)
    lora.save_pretrained(tmp_path / "adapter")
    lm = load_model(str(model_dir), adapter=str(tmp_path / "adapter"), device="cpu", quiet=True)
    prep = prepare(read_dataset(alpaca_file), lm.tokenizer, SignalConfig(store=str(tmp_path / "store"), progress=False))
    unmerged = loss_pass(lm.model, prep.encoded, pad_id=lm.tokenizer.pad_token_id)
    seen = []
    real = passes.loss_pass

    def spy(model, *a, **k):
        seen.append(all(layer.merged for layer in _lora_layers(model)))
        return real(model, *a, **k)

    monkeypatch.setattr(passes, "loss_pass", spy)
    frame = passes.run_pass(prep, "loss", lm)
    assert seen and all(seen) and has_unmerged(lm.model)
    np.testing.assert_allclose(frame["loss"], unmerged["loss"], atol=1e-5, rtol=0)
    # the store key is the adapter's, as before: merging is how the pass runs, not what it computes
    assert passes.pass_spec(prep, "loss", lm).model == lm.fingerprint


def test_training_after_merged_evaluations_is_unchanged(tmp_path, model_dir, alpaca_file, monkeypatch):
    """The trajectory's evaluation after epoch 1 runs merged; epoch 2 then trains exactly the adapter (bit for bit)
    and the trajectory holds the same losses (1e-5) as a run whose evaluations ran through the unmerged adapters."""
    cfg = TrainConfig(epochs=2, lr=5e-3, token_budget=512, lora_r=4, seed=0)

    def run(name):
        lm = load_model(str(model_dir), device="cpu", quiet=True)
        prep = prepare(read_dataset(alpaca_file), lm.tokenizer,
                       SignalConfig(store=str(tmp_path / f"store-{name}"), progress=False))
        frames, fps, _ = train_reference(lm, prep, tmp_path / name, cfg)
        return frames, load_file(tmp_path / name / "epoch-2" / "adapter_model.safetensors")

    frames, weights = run("merged")
    monkeypatch.setattr(passes, "merged", lambda model: contextlib.nullcontext(model))
    frames0, weights0 = run("unmerged")
    assert weights.keys() == weights0.keys()
    assert all(torch.equal(weights[k], weights0[k]) for k in weights)
    for a, b in zip(frames, frames0, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], atol=1e-5, rtol=0)


def test_generation_is_the_same_merged(tokenizer):
    from siftlm.evaluate import generate as gen

    model = _lora(tokenizer)
    prompts = [e.input_ids[:12] for e in _encoded(tokenizer, 4)]
    plain = gen.generate_batch(model, tokenizer, prompts, max_new_tokens=8)
    with merged(model):
        fast = gen.generate_batch(model, tokenizer, prompts, max_new_tokens=8)
    assert fast == plain

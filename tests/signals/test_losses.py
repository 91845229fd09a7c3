"""The batched engine against a plain per-example loop with full logits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from siftlm.models.template import IGNORE, encode
from siftlm.signals import losses
from siftlm.signals.losses import loss_pass
from tests.conftest import alpaca_rows


def _encoded(tokenizer, n=20):
    out = []
    for i, r in enumerate(alpaca_rows(n)):
        msgs = [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]
        out.append(encode(tokenizer, str(i), msgs))
    return out


def _reference(model, e):
    """Per example, batch size 1, full logits: the obviously correct computation."""
    with torch.no_grad():
        logits = model(torch.tensor([e.input_ids])).logits[0, :-1].double()
    y = torch.tensor(e.labels[1:])
    keep = y != IGNORE
    logits, y = logits[keep], y[keep]
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    onehot = F.one_hot(y, logits.shape[-1]).double()
    return {"nll_sum": nll.sum().item(), "n_tokens": int(keep.sum()), "loss": nll.mean().item(),
            "entropy": (-(p * logp).sum(-1)).mean().item(), "el2n": (p - onehot).norm(dim=-1).mean().item(),
            "acc": (logits.argmax(-1) == y).double().mean().item()}


@pytest.mark.parametrize("budget", [1, 64, 300, 100_000])
def test_batched_equals_per_example(tokenizer, model, budget):
    enc = _encoded(tokenizer)
    assert len({len(e.input_ids) for e in enc}) > 10  # mixed lengths
    got = loss_pass(model, enc, pad_id=tokenizer.pad_token_id, token_budget=budget)
    for i, e in enumerate(enc):
        ref = _reference(model, e)
        for k, v in ref.items():
            assert got[k][i] == pytest.approx(v, abs=1e-4), (k, i)


def test_logit_chunking_does_not_change_results(tokenizer, model, monkeypatch):
    enc = _encoded(tokenizer, 8)
    a = loss_pass(model, enc, pad_id=0, token_budget=4096)
    monkeypatch.setattr(losses, "LOGIT_CHUNK_ELEMENTS", 1)    # forces chunks of 64 positions
    monkeypatch.setattr(losses, "STATS_BLOCK_ELEMENTS", 700)  # and softmax blocks of 2 rows (V = 259)
    b = loss_pass(model, enc, pad_id=0, token_budget=4096)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)


@pytest.mark.parametrize("attr,value,transform", [
    ("final_logit_softcapping", 0.5, lambda z: torch.tanh(z / 0.5) * 0.5),   # Gemma 2
    ("logits_scaling", 4.0, lambda z: z / 4.0),                              # Granite
    ("logit_scale", 0.25, lambda z: z * 0.25),                               # Cohere
])
def test_model_logit_transforms_are_applied(tokenizer, model, monkeypatch, attr, value, transform):
    enc = _encoded(tokenizer, 3)
    monkeypatch.setattr(model.config, attr, value, raising=False)
    got = loss_pass(model, enc, pad_id=0)
    e = enc[1]
    with torch.no_grad():
        logits = transform(model(torch.tensor([e.input_ids])).logits[0, :-1])
    y = torch.tensor(e.labels[1:])
    ref = F.cross_entropy(logits[y != IGNORE], y[y != IGNORE]).item()
    assert got["loss"][1] == pytest.approx(ref, abs=1e-5)


def test_lm_embeddings_batched_equal_per_example_mean_hidden_state(tokenizer, model):
    from siftlm.signals.embed import lm_embed_pass

    enc = _encoded(tokenizer, 10)
    got = lm_embed_pass(model, enc, pad_id=0, token_budget=300)["vector"]
    for i, e in enumerate(enc):
        with torch.no_grad():
            h = model.model(torch.tensor([e.input_ids])).last_hidden_state[0]
        resp = torch.tensor(e.labels) != IGNORE
        np.testing.assert_allclose(got[i], h[resp].mean(0).numpy(), atol=1e-5)

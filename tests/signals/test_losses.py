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

"""The forward helpers every pass uses: logit transforms and response positions, against the model's own forward."""

import pytest
import torch
import torch.nn.functional as F

from siftlm.models.batching import collate
from siftlm.models.forward import response_hidden, response_nll
from siftlm.models.template import IGNORE
from siftlm.signals.losses import loss_pass
from tests.signals.test_losses import _encoded


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


def test_response_nll_equals_the_models_own_loss_per_example(tokenizer, model):
    enc = _encoded(tokenizer, 6)
    batch = collate(enc, list(range(6)), tokenizer.pad_token_id)          # padded, mixed lengths
    nll, rows = response_nll(model, batch)
    h, targets, rows2 = response_hidden(model, batch)
    assert torch.equal(rows, rows2) and h.shape[0] == nll.shape[0] == sum(e.n_response for e in enc)
    for i, e in enumerate(enc):
        with torch.no_grad():
            ref = model(torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss
        assert nll[rows == i].mean().item() == pytest.approx(ref.item(), abs=1e-5)



def test_chunked_training_loss_equals_one_piece_in_value_and_gradient(tokenizer, model, monkeypatch):
    import copy

    import siftlm.models.forward as forward

    enc = _encoded(tokenizer, 6)
    batch = collate(enc, list(range(6)), tokenizer.pad_token_id)
    results = []
    for elements in (1 << 30, 259 * 16):                                # one chunk, then chunks of 16 positions
        monkeypatch.setattr(forward, "TRAIN_LOGIT_ELEMENTS", elements)
        m = copy.deepcopy(model).train()
        nll, _ = response_nll(m, batch)
        nll.mean().backward()
        results.append((nll.detach(), {n: q.grad.clone() for n, q in m.named_parameters()}))
    (a, ga), (b, gb) = results
    assert a.shape[0] > 32                                               # really several chunks
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-5, atol=1e-7)


def test_evaluating_restores_the_training_mode_even_on_an_error(monkeypatch):
    from siftlm.models.forward import evaluating
    from siftlm.signals import embed, losses

    net = torch.nn.Linear(2, 2)
    for mode in (True, False):
        net.train(mode)
        with pytest.raises(RuntimeError, match="boom"), evaluating(net):
            assert not net.training
            raise RuntimeError("boom")
        assert net.training is mode

    class Enc:
        input_ids = [1, 2, 3]

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(losses, "collate", lambda *a: None)
    monkeypatch.setattr(losses, "batch_stats", boom)
    monkeypatch.setattr(embed, "collate", lambda *a: None)
    monkeypatch.setattr(embed, "last_hidden", boom)
    for run in (losses.loss_pass, embed.lm_embed_pass):         # both left the model in eval mode on an error
        net.train(True)
        with pytest.raises(RuntimeError, match="boom"):
            run(net, [Enc()], pad_id=0)
        assert net.training, run.__name__

"""DataInf against its own equation on hand-made gradients, and against the exact inverse-Hessian influence it
approximates on a tiny model's per-layer LoRA gradients."""

import numpy as np
import pytest

from siftlm.scores.datainf import datainf, influence_layer, layer_lambda


def test_the_closed_form_equals_the_papers_sum_of_inverses():
    """DataInf eq.: I(k) = -v^T (1/n) sum_i (g_i g_i^T + lambda I)^{-1} g_k, inverted explicitly."""
    rng = np.random.default_rng(0)
    g, v = rng.standard_normal((12, 5)), rng.standard_normal(5)
    lam = layer_lambda(g)
    inv = sum(np.linalg.inv(np.outer(gi, gi) + lam * np.eye(5)) for gi in g) / len(g)
    np.testing.assert_allclose(influence_layer(g, v), -(v @ inv @ g.T), rtol=1e-10)
    assert lam == pytest.approx(0.1 * np.mean(g ** 2))
    # two layers add up; the score is the benefit -I
    g2, v2 = rng.standard_normal((12, 3)), rng.standard_normal((4, 3))
    want = -(influence_layer(g, v) + influence_layer(g2, v2.mean(0)))
    np.testing.assert_allclose(datainf([g, g2], [v[None], v2]), want)


def test_it_tracks_the_exact_influence_on_a_tiny_model(tokenizer, model):
    """On LoRA gradients of a tiny Llama, DataInf ranks training examples like the exact -v^T (G + lambda I)^{-1} g_k."""
    from siftlm.config import GradConfig
    from siftlm.signals.grads import reference_lora_grads
    from tests.signals.test_losses import _encoded

    enc = _encoded(tokenizer, 30)
    cfg = GradConfig(rank=2, target_modules="q_proj,v_proj", seed=0)
    per = [reference_lora_grads(model, e, pad_id=0, cfg=cfg) for e in enc]
    names = list(per[0])
    train = [np.stack([p[n].numpy() for p in per[:24]]).astype(np.float64) for n in names]
    val = [np.stack([p[n].numpy() for p in per[24:]]).astype(np.float64) for n in names]
    from scipy import stats

    def exact(scale):
        out = np.zeros(24)
        for g, t in zip(train, val, strict=True):
            h = g.T @ g / len(g) + layer_lambda(g, scale) * np.eye(g.shape[1])
            out += t.mean(0) @ np.linalg.solve(h, g.T)         # -I_l(k) with the exact inverse
        return out

    # the approximation is exact as lambda dominates, and still ranks clearly better than chance at DataInf's default
    strong = 1000.0
    np.testing.assert_allclose(datainf(train, val, lambda_scale=strong), exact(strong), rtol=0.05)
    assert stats.spearmanr(exact(strong), datainf(train, val, lambda_scale=strong)).statistic > 0.99
    assert stats.spearmanr(exact(0.1), datainf(train, val)).statistic > 0.4

"""LoRA-gradient features: batched per-example gradients against autograd loops, and the sparse JL's properties."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siftlm.config import GradConfig
from siftlm.models.batching import collate
from siftlm.models.forward import response_nll
from siftlm.signals.grads import LoraGradProbe, SparseJL, grad_pass, lora_a, reference_lora_grads, target_layers
from tests.signals.test_losses import _encoded


def _batched_raw(model, enc, cfg, budget):
    """Per-example vec(grad_B) per layer from the one-backward probe, in input order."""
    from siftlm.models.batching import plan_batches

    probe = LoraGradProbe(model, cfg)
    out = [dict() for _ in enc]
    n_multi = 0
    for index in plan_batches([len(e.input_ids) for e in enc], budget):
        n_multi += len(index) > 1
        got = {}
        probe.per_example(collate(enc, index, 0), sink=lambda name, g, got=got: got.__setitem__(name, g.clone()))
        for row, i in enumerate(index):
            out[i] = {n: g[row] for n, g in got.items()}
    return out, n_multi


@pytest.mark.parametrize("targets", ["all-linear", "q_proj,v_proj,down_proj"])
def test_batched_grads_equal_per_example_autograd(tokenizer, model, targets):
    enc = _encoded(tokenizer, 12)
    assert len({len(e.input_ids) for e in enc}) > 5          # mixed lengths, so batches are padded
    cfg = GradConfig(rank=4, target_modules=targets, seed=3)
    got, n_multi = _batched_raw(model, enc, cfg, budget=400)
    assert n_multi >= 2                                       # several examples share one backward
    for e, g in zip(enc, got, strict=True):
        ref = reference_lora_grads(model, e, pad_id=0, cfg=cfg)
        assert set(ref) == set(g)
        a = torch.cat([g[n] for n in ref])
        b = torch.cat(list(ref.values()))
        cos = torch.dot(a, b) / (a.norm() * b.norm())
        assert cos >= 0.999, (e.id, float(cos))
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6 * float(b.abs().max()))


def test_grad_b_is_weight_gradient_times_a_transpose(tokenizer, model):
    """Eq. 4 of the paper: grad_B = grad_W A^T, against autograd on the weight itself."""
    e = _encoded(tokenizer, 3)[2]
    cfg = GradConfig(rank=4, target_modules="o_proj", seed=1)
    ref = reference_lora_grads(model, e, pad_id=0, cfg=cfg)
    name, layer = target_layers(model, "o_proj")[0]
    layer.weight.requires_grad_(True)
    try:
        nll, _ = response_nll(model, collate([e], [0], 0))
        (gw,) = torch.autograd.grad(nll.mean(), [layer.weight])
    finally:
        layer.weight.requires_grad_(False)
    expect = gw @ lora_a(name, layer, 4, 1, torch.device("cpu")).t()      # (m, r)
    assert torch.allclose(ref[name], expect.reshape(-1), rtol=1e-4, atol=1e-7)


def test_grad_pass_projects_and_normalises_the_reference(tokenizer, model):
    enc = _encoded(tokenizer, 8)
    cfg = GradConfig(rank=4, dim=64, density=2, seed=5)
    res = grad_pass(model, enc, pad_id=0, cfg=cfg, token_budget=300)
    raw = grad_pass(model, enc, pad_id=0, cfg=GradConfig(rank=4, dim=64, density=2, seed=5, normalize=False),
                    token_budget=300)
    jl = SparseJL(64, 2, 5)
    for i, e in enumerate(enc):
        ref = reference_lora_grads(model, e, pad_id=0, cfg=cfg)
        full = torch.cat(list(ref.values()))
        assert res["grad_norm"][i] == pytest.approx(float(full.norm()), rel=1e-4)
        y = jl.project({n: g[None] for n, g in ref.items()})[0].numpy()
        np.testing.assert_allclose(raw["vector"][i], y, rtol=1e-3, atol=1e-6 * np.abs(y).max())
        np.testing.assert_allclose(res["vector"][i], y / np.linalg.norm(y), rtol=1e-3, atol=1e-5)
        with torch.no_grad():
            loss = float(response_nll(model, collate([e], [0], 0))[0].mean())
        assert res["loss"][i] == pytest.approx(loss, rel=1e-4)


def test_probe_leaves_model_untouched(tokenizer, model):
    enc = _encoded(tokenizer, 4)
    batch = collate(enc, [0, 1, 2, 3], 0)
    flags = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():
        before = model(batch.input_ids, attention_mask=batch.attention_mask).logits
    grad_pass(model, enc, pad_id=0, cfg=GradConfig(rank=2, dim=16))
    with torch.no_grad():
        after = model(batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.equal(before, after)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())          # no weight gradient was computed
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_lora_a_has_variance_one_over_r():
    layer = torch.nn.Linear(4000, 10)
    a = lora_a("x", layer, 16, 0, torch.device("cpu"))
    assert a.shape == (16, 4000)
    assert float(a.var()) == pytest.approx(1 / 16, rel=0.03)     # 64k draws: std error of the variance ~0.6 %
    assert torch.equal(a, lora_a("x", layer, 16, 0, torch.device("cpu")))
    assert not torch.equal(a, lora_a("y", layer, 16, 0, torch.device("cpu")))


def _dense(jl: SparseJL, name: str, size: int) -> np.ndarray:
    rows, signs = jl._map(name, size)
    s = np.zeros((jl.dim, size))
    for k in range(jl.density):
        s[rows[k].numpy(), np.arange(size)] += signs[k].numpy()
    return s


def test_sparse_jl_is_the_block_sparse_matrix():
    jl = SparseJL(32, 4, seed=2)
    s = _dense(jl, "layer", 50)
    nonzero = s != 0
    assert (nonzero.sum(0) == 4).all()                          # s nonzeros per column ...
    for k in range(4):                                          # ... one in each block of D/s rows
        assert (nonzero[k * 8:(k + 1) * 8].sum(0) == 1).all()
    np.testing.assert_allclose(np.abs(s[nonzero]), 0.5)         # +-1/sqrt(s)
    x = torch.randn(3, 50)
    np.testing.assert_allclose(jl.project({"layer": x}).numpy(), x.numpy() @ s.T, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), density=st.sampled_from([1, 2, 4, 8]))
def test_sparse_jl_preserves_norms_and_inner_products(seed, density):
    """E||Sx||^2 = ||x||^2 and Var <= 2||x||^4/D for this construction: with D=2048, 6 sigma is 0.19."""
    d, p = 2048, 3000
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, p))
    x[1] = x[0] + 0.3 * x[1]                                    # a correlated pair
    jl = SparseJL(d, density, seed=seed % 1000)
    y = jl.project({"a": torch.tensor(x[:, :1000], dtype=torch.float32),
                    "b": torch.tensor(x[:, 1000:], dtype=torch.float32)}).double().numpy()
    bound = 6 * np.sqrt(2 / d)
    ratio = (y ** 2).sum(1) / (x ** 2).sum(1)
    assert np.all(np.abs(ratio - 1) < bound), ratio
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(x, axis=1, keepdims=True)
    gram_err = np.abs(yn @ yn.T - xn @ xn.T)
    assert gram_err.max() < bound, gram_err.max()


def test_sparse_jl_is_unbiased_over_seeds():
    x = torch.randn(2, 500, generator=torch.Generator().manual_seed(0))
    true = float(x[0] @ x[1])
    est = [float(p[0] @ p[1]) for p in (SparseJL(64, 2, seed=s).project({"a": x}) for s in range(400))]
    sd = np.std(est) / np.sqrt(len(est))
    assert abs(np.mean(est) - true) < 4 * sd


def test_a_layer_called_twice_contributes_the_sum_of_its_calls(tokenizer):
    """A shared block (one B parameter, two calls per forward): batched == autograd on the shared B."""
    from tests.conftest import tiny_llama

    m = tiny_llama(len(tokenizer), seed=1)
    m.model.layers[1].mlp = m.model.layers[0].mlp                     # weight sharing across layers
    enc = _encoded(tokenizer, 6)
    cfg = GradConfig(rank=3, target_modules="down_proj,o_proj", seed=2)
    got, _ = _batched_raw(m, enc, cfg, budget=300)
    for e, g in zip(enc, got, strict=True):
        ref = reference_lora_grads(m, e, pad_id=0, cfg=cfg)
        assert set(ref) == set(g) == {"layers.0.mlp.down_proj", "layers.0.self_attn.o_proj", "layers.1.self_attn.o_proj"}
        for n in ref:
            assert torch.allclose(g[n], ref[n], rtol=1e-3, atol=1e-6 * float(ref[n].abs().max()))


def test_peft_model_probes_base_layers_under_their_own_names(tokenizer, model):
    import copy

    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    plain = [n for n, _ in target_layers(model, "q_proj,v_proj")]
    assert [n for n, _ in target_layers(peft, "q_proj,v_proj")] == plain
    assert len(target_layers(peft)) == len(target_layers(model))     # adapters' own lora_A/B are not probed
    enc = _encoded(tokenizer, 3)
    a = grad_pass(peft, enc, pad_id=0, cfg=GradConfig(rank=2, dim=32, target_modules="q_proj,v_proj"))
    b = grad_pass(model, enc, pad_id=0, cfg=GradConfig(rank=2, dim=32, target_modules="q_proj,v_proj"))
    np.testing.assert_allclose(np.stack(a["vector"]), np.stack(b["vector"]), atol=1e-5)   # LoRA B = 0: same model

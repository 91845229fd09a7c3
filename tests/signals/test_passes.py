"""run_pass: one entry for every pass, keyed by data + weights + settings, computing only missing shards."""

import numpy as np
import pytest

from siftlm.config import GradConfig, SignalConfig
from siftlm.data import read_dataset
from siftlm.models.load import in_memory
from siftlm.signals import PASS_HELP, passes
from siftlm.signals.losses import loss_pass
from siftlm.signals.passes import PASSES, pass_spec, run_pass
from siftlm.signals.prepare import prepare, prepare_pairs


@pytest.fixture
def prep(tmp_path, tokenizer, alpaca_file):
    return prepare(read_dataset(alpaca_file), tokenizer, SignalConfig(store=str(tmp_path / "st"), shard_size=10,
                                                                      progress=False))


def test_every_pass_has_help_and_a_kind():
    assert set(PASSES) == set(PASS_HELP) and {p.kind for p in PASSES.values()} == {"sft", "pairs", "text"}


def test_run_pass_equals_the_kernel_and_reruns_compute_nothing(prep, model, monkeypatch):
    got = run_pass(prep, "loss", in_memory(model, "m0"))
    direct = loss_pass(model, prep.encoded, pad_id=0, token_budget=prep.cfg.token_budget)
    assert got["id"].tolist() == prep.ids
    np.testing.assert_allclose(got["loss"], direct["loss"], atol=1e-6)
    calls = []
    monkeypatch.setattr(passes, "loss_pass", lambda *a, **k: calls.append(1) or pytest.fail("recomputed"))
    again = run_pass(prep, "loss", in_memory(model, "m0"))
    assert not calls and again.equals(got)


def test_store_key_changes_with_weights_settings_and_data(prep, model, tmp_path, tokenizer, alpaca_file):
    base = pass_spec(prep, "loss", in_memory(model, "m0"))
    assert pass_spec(prep, "loss", in_memory(model, "m1")).key != base.key                  # other weights
    other = prepare(read_dataset(alpaca_file), tokenizer, SignalConfig(store=str(tmp_path / "st"), max_length=64,
                                                                       progress=False))
    assert pass_spec(other, "loss", in_memory(model, "m0")).key != base.key                 # other max_length (and data)
    assert pass_spec(prep, "uncond", in_memory(model, "m0")).dataset != base.dataset        # responses alone are other data
    g1 = pass_spec(prep, "grads", in_memory(model, "m0"), {"grad": GradConfig(dim=64)})
    g2 = pass_spec(prep, "grads", in_memory(model, "m0"), {"grad": GradConfig(dim=128)})
    assert g1.key != g2.key and g1.settings["dim"] == 64


def test_a_pass_refuses_the_wrong_kind_of_data(prep, model, tmp_path, tokenizer, pair_file):
    with pytest.raises(ValueError, match="pass pairs takes pairs data, got sft"):
        run_pass(prep, "pairs", in_memory(model, "m0"))
    pairs = prepare_pairs(read_dataset(pair_file), tokenizer, SignalConfig(store=str(tmp_path / "st"), progress=False))
    with pytest.raises(ValueError, match="pass loss takes sft data, got pairs"):
        run_pass(pairs, "loss", in_memory(model, "m0"))
    with pytest.raises(ValueError, match="unknown pass 'los'"):
        run_pass(prep, "los", in_memory(model, "m0"))


def test_one_forward_for_the_loss_and_lm_embed_stores_both_as_their_own_passes(prep, model, monkeypatch):
    """run_pass("loss", also=("lm-embed",)): one decoder run per batch; each pass's rows equal its own kernel's (the
    separate pass), stored under the separate pass's key, and the lm-embed pass is then served without computing."""
    from siftlm.models.load import in_memory as handle
    from siftlm.signals import store
    from siftlm.signals.embed import lm_embed_pass

    lm = handle(model, "m0")
    runs = []
    real = passes.loss_pass
    monkeypatch.setattr(passes, "loss_pass", lambda *a, **k: runs.append(k.get("embed")) or real(*a, **k))
    fused = run_pass(prep, "loss", lm, also=("lm-embed",))
    assert runs and all(runs)                                          # every shard ran the fused forward
    assert passes.stored(prep, "lm-embed", lm)
    monkeypatch.setattr(passes, "lm_embed_pass", lambda *a, **k: pytest.fail("lm-embed recomputed"))
    embedded = run_pass(prep, "lm-embed", lm)
    direct_loss = real(model, prep.encoded, pad_id=0, token_budget=prep.cfg.token_budget)
    direct_vec = lm_embed_pass(model, prep.encoded, pad_id=0, token_budget=prep.cfg.token_budget)["vector"]
    for c in ("loss", "nll_sum", "entropy", "el2n", "acc", "n_tokens"):
        np.testing.assert_allclose(fused[c], direct_loss[c], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.stack(embedded["vector"]), np.stack(direct_vec), rtol=1e-5, atol=1e-6)
    assert "vector" not in fused.columns and list(embedded["id"]) == prep.ids
    for name in ("loss", "lm-embed"):                                  # stored under the keys a separate pass uses
        assert store.is_complete(prep.cfg.store, pass_spec(prep, name, lm))
    with pytest.raises(ValueError, match="cannot compute grads in the same forward"):
        run_pass(prep, "loss", handle(model, "m1"), also=("grads",))


@pytest.mark.parametrize("also", [("loss",), ("lm-embed",), ("loss", "lm-embed")])
def test_the_grads_forward_serves_the_loss_and_lm_embed_passes(prep, model, monkeypatch, also):
    """run_pass("grads", also=...): the loss-pass columns and lm-embed vectors come from the grads pass's own forward
    (no loss or lm-embed kernel runs), equal the separate passes' to float tolerance, and are stored under the keys
    the separate passes use; the grads rows equal the grads pass run alone."""
    from siftlm.models.load import in_memory as handle
    from siftlm.signals import store
    from siftlm.signals.embed import lm_embed_pass
    from siftlm.signals.grads import grad_pass

    lm = handle(model, "g0")
    direct_loss = passes.loss_pass(model, prep.encoded, pad_id=0, token_budget=prep.cfg.token_budget)
    direct_vec = lm_embed_pass(model, prep.encoded, pad_id=0, token_budget=prep.cfg.token_budget)["vector"]
    direct_grads = grad_pass(model, prep.encoded, pad_id=0, token_budget=prep.cfg.token_budget)
    monkeypatch.setattr(passes, "loss_pass", lambda *a, **k: pytest.fail("loss kernel ran"))
    monkeypatch.setattr(passes, "lm_embed_pass", lambda *a, **k: pytest.fail("lm-embed kernel ran"))
    fused = run_pass(prep, "grads", lm, also=also)
    np.testing.assert_allclose(np.stack(fused["vector"]), np.stack(direct_grads["vector"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused["grad_norm"], direct_grads["grad_norm"], rtol=1e-5)
    for name in also:
        assert store.is_complete(prep.cfg.store, pass_spec(prep, name, lm))
        served = run_pass(prep, name, lm)                              # from the store: the kernels would fail
        assert list(served["id"]) == prep.ids
        if name == "loss":
            for c in ("loss", "nll_sum", "entropy", "el2n", "acc", "n_tokens"):
                np.testing.assert_allclose(served[c], direct_loss[c], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(served["loss"], fused["loss"], rtol=1e-5)   # and the grads pass's own loss
        else:
            np.testing.assert_allclose(np.stack(served["vector"]), np.stack(direct_vec), rtol=1e-5, atol=1e-6)
    missing = {"loss", "lm-embed"} - set(also)
    assert not any(store.is_complete(prep.cfg.store, pass_spec(prep, n, lm)) for n in missing)


def test_a_companion_already_stored_is_not_computed_again(prep, model, monkeypatch):
    """grads with loss + lm-embed when the loss pass is stored: the forward computes lm-embed alone beside grads."""
    from siftlm.models.load import in_memory as handle

    lm = handle(model, "g1")
    run_pass(prep, "loss", lm)
    seen = []
    real = passes.grads_and
    monkeypatch.setattr(passes, "grads_and", lambda *a, **k: seen.append(k["also"]) or real(*a, **k))
    run_pass(prep, "grads", lm, also=("loss", "lm-embed"))
    assert seen and all(s == ("lm-embed",) for s in seen)

"""``--compile``: the compiled decoder gives eager's per-example losses (1e-5 in fp32, the same ranking in bf16) with
one graph for every batch shape; a failure falls back to eager with one line; the setting is in no store key."""

import numpy as np
import pytest
import torch
from scipy import stats

from siftlm.config import SignalConfig, UsageError
from siftlm.data import read_dataset
from siftlm.models import compiled
from siftlm.models.batching import plan_batches
from siftlm.models.compiled import compiling, decide
from siftlm.models.forward import parts
from siftlm.models.precision import computing
from siftlm.signals import passes
from siftlm.signals.losses import loss_pass
from siftlm.signals.prepare import prepare
from tests.conftest import tiny_llama
from tests.signals.test_losses import _encoded

WHY_NOT = compiled.unavailable("cpu")
needs_compiler = pytest.mark.skipif(WHY_NOT is not None, reason=f"torch.compile cannot run here: {WHY_NOT}")


def _fresh(tokenizer, dtype=torch.float32):
    """A model of its own: compiled graphs are cached per decoder, and counted per test."""
    return tiny_llama(len(tokenizer), seed=3).to(dtype)


def _compiled_or_skip(model):
    decoder = model.get_decoder()
    if decoder in compiled._failed:
        pytest.skip(f"torch.compile failed on this machine: {compiled._failed[decoder]}")


@needs_compiler
def test_compiled_losses_equal_eager_with_one_graph_for_every_shape(tokenizer):
    from torch._dynamo.utils import counters

    model = _fresh(tokenizer)
    enc = _encoded(tokenizer, 24)
    eager = loss_pass(model, enc, pad_id=tokenizer.pad_token_id, token_budget=300)
    before = counters["stats"]["unique_graphs"]
    with compiling(True):
        got = loss_pass(model, enc, pad_id=tokenizer.pad_token_id, token_budget=300)   # many shapes, some of 1 row
        _compiled_or_skip(model)
        shapes = {(len(b), max(len(enc[i].input_ids) for i in b)) for b in plan_batches(
            [len(e.input_ids) for e in enc], 300)}
        assert len(shapes) > 5 and any(n == 1 for n, _ in shapes)
        graphs = counters["stats"]["unique_graphs"] - before
        again = loss_pass(model, enc[:7], pad_id=tokenizer.pad_token_id, token_budget=100)   # new shapes: no new graph
        assert counters["stats"]["unique_graphs"] - before == graphs
    assert 1 <= graphs <= 2            # one graph (dynamic batch and length); at most a split of it, never one per shape
    for k in eager:
        np.testing.assert_allclose(got[k], eager[k], atol=1e-5, rtol=0)
    np.testing.assert_allclose(again["loss"], eager["loss"][:7], atol=1e-5, rtol=0)


@needs_compiler
def test_compiled_bf16_ranks_like_eager(tokenizer):
    """Spearman >= 0.999 in bf16. A random model's losses all sit near log(V), 0.02 apart, where bf16's own noise
    decides the ranking; a sharper output layer spreads them as a trained model's are."""
    model = _fresh(tokenizer, torch.bfloat16)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    enc = _encoded(tokenizer, 24)
    with computing(torch.bfloat16):                  # products in bf16, as a pass of a bf16 handle runs them
        eager = loss_pass(model, enc, pad_id=tokenizer.pad_token_id)["loss"]
        with compiling(True):
            got = loss_pass(model, enc, pad_id=tokenizer.pad_token_id)["loss"]
            _compiled_or_skip(model)
    assert stats.spearmanr(eager, got).statistic >= 0.999
    assert np.median(np.abs(got - eager) / eager) < 1e-2


def test_a_failed_compilation_runs_eager_with_one_line(tokenizer, monkeypatch, capsys):
    model = _fresh(tokenizer)
    enc = _encoded(tokenizer, 12)
    eager = loss_pass(model, enc, pad_id=tokenizer.pad_token_id, token_budget=200)

    def broken(module, **kwargs):
        def run(*a, **k):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\nsimulated: no compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(compiled, "_said", set())
    with compiling(True):
        got = loss_pass(model, enc, pad_id=tokenizer.pad_token_id, token_budget=200)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("compile: off, running eager (RuntimeError")
    assert "C++ compile error" in lines[0]
    assert "Traceback" not in err
    for k in eager:
        np.testing.assert_array_equal(got[k], eager[k])
    assert model.get_decoder() in compiled._failed                     # not tried again for this decoder


def test_gradients_stay_eager(tokenizer, monkeypatch):
    """The training step and the grads pass need gradients: never through the compiled forward."""
    model = _fresh(tokenizer)
    monkeypatch.setattr(compiled, "_compiled_of", lambda d: (_ for _ in ()).throw(AssertionError("compiled")))
    ids = torch.tensor([[1, 5, 6, 7]])
    with compiling(True), torch.enable_grad():
        out = compiled.decoder_forward(model.get_decoder(), ids, torch.ones_like(ids))
    assert out.last_hidden_state.requires_grad


def test_the_auto_rule():
    assert decide("off", "cpu", 10**9) == (False, "--compile off")
    if WHY_NOT is None:
        assert decide("auto", "cpu", compiled.AUTO_MIN_TOKENS["cpu"] - 1)[0] is False
        assert decide("auto", "cpu", compiled.AUTO_MIN_TOKENS["cpu"])[0] is True
        assert decide("auto", "cpu", compiled.AUTO_MIN_TOKENS["cpu"], torch.bfloat16)[0] is True
        # float32 on a CPU: matmul-bound, compiling measured 1.03x; auto never compiles it, `on` still does
        on, why = decide("auto", "cpu", 10**9, torch.float32)
        assert not on and "float32 on a CPU" in why
        assert decide("on", "cpu", 10, torch.float32) == (True, "--compile on")
        assert decide("on", "cpu", 10) == (True, "--compile on")
    with pytest.raises(UsageError, match="unknown --compile 'yes'"):
        decide("yes", "cpu", 10)


def test_no_compiler_means_off(monkeypatch):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    on, why = decide("auto", "cpu", 10**9)
    assert not on and "no C++ compiler" in why
    on, why = decide("on", "cpu", 10**9)
    assert not on and why.startswith("--compile on, but no C++ compiler")


@needs_compiler
def test_run_pass_compiles_under_the_same_store_key(tmp_path, tokenizer, model_dir, alpaca_file, capsys):
    """A LoRA model's pass through run_pass: merged and compiled, the unmerged eager losses, the same key."""
    from siftlm.models.load import load_model
    from siftlm.models.merge import has_unmerged
    from tests.models.test_merge import _lora

    _lora(tokenizer).save_pretrained(tmp_path / "adapter")
    lm = load_model(str(model_dir), adapter=str(tmp_path / "adapter"), device="cpu", quiet=True)
    unmerged = loss_pass(lm.model, prepare(read_dataset(alpaca_file), lm.tokenizer, SignalConfig()).encoded,
                         pad_id=tokenizer.pad_token_id)["loss"]
    read = read_dataset(alpaca_file)
    compiled._said.clear()
    on = prepare(read, lm.tokenizer, SignalConfig(store=str(tmp_path / "a"), progress=False, compile="on"))
    off = prepare(read, lm.tokenizer, SignalConfig(store=str(tmp_path / "b"), progress=False, compile="off"))
    assert passes.pass_spec(on, "loss", lm) == passes.pass_spec(off, "loss", lm)
    a = passes.run_pass(on, "loss", lm)
    _compiled_or_skip(lm.model.get_base_model())
    assert parts(lm.model).decoder in compiled._compiled                 # it ran compiled
    assert "compile: on (--compile on)" in capsys.readouterr().err
    b = passes.run_pass(off, "loss", lm)
    np.testing.assert_allclose(a["loss"], b["loss"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(a["loss"], unmerged, atol=1e-5, rtol=0)
    assert has_unmerged(lm.model)

"""`finetune` on a tiny model: it returns the trained model's identity, and a model trained in place cannot be
passed off as the base."""

import numpy as np
import pytest

from siftlm.config import SignalConfig, TrainConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model
from siftlm.signals.losses import loss_pass
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import prepare
from siftlm.train.sft import finetune

CFG = TrainConfig(epochs=2, lr=5e-3, token_budget=512, lora_r=4, seed=0)


def _setup(model_dir, data, store):
    lm = load_model(str(model_dir), device="cpu")
    return lm, prepare(read_dataset(data), lm.tokenizer, SignalConfig(store=str(store), progress=False))


def test_finetune_returns_the_trained_identity_and_passes_are_keyed_truly(tmp_path, model_dir, alpaca_file):
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store")
    base_fp = lm.fingerprint
    base = run_pass(prep, "loss", lm, label="base")        # stored under the base's key
    info, trained = finetune(lm, prep, tmp_path / "ft", CFG)
    final = load_model(info["final"], device="cpu")
    assert info["fingerprint"] == final.fingerprint != base_fp and lm.fingerprint == base_fp   # lm is not changed
    # training returns the trained model's handle: its weights in memory, its identity, how to load it again
    assert trained.fingerprint == info["fingerprint"] == lm.trained_into and trained.model.get_base_model() is lm.model
    assert load_model(**trained.source, quiet=True).fingerprint == trained.fingerprint
    # the cached base pass is still served under the base's key; computing a new pass of the trained weights under it
    # is refused (the root of the bug 21528af fixed): the trained identity must be used
    with pytest.raises(RuntimeError, match="trained in place"):
        run_pass(prep, "uncond", lm)
    after = run_pass(prep, "loss", trained, label="after")
    direct = loss_pass(final.model, prep.encoded, pad_id=prep.tokenizer.pad_token_id)["loss"]
    np.testing.assert_allclose(after["loss"], direct, atol=1e-5)
    assert np.abs(after["loss"].to_numpy() - base["loss"].to_numpy()).max() > 1e-3
    # a finished folder is reused without training: a fresh base model keeps the base's fingerprint
    again, _ = _setup(model_dir, alpaca_file, tmp_path / "store")
    reused = finetune(again, prep, tmp_path / "ft", CFG)
    assert reused.info["fingerprint"] == info["fingerprint"] and reused.model is None
    assert again.fingerprint == base_fp and again.trained_into is None

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from siftlm.config import SignalConfig, TrainConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import prepare
from siftlm.train import loop as trajectory
from siftlm.train.reference import train_reference

CFG = TrainConfig(epochs=2, lr=5e-3, token_budget=512, lora_r=4, seed=0)


def _setup(model_dir, data, store):
    lm = load_model(str(model_dir), device="cpu")
    prep = prepare(read_dataset(data), lm.tokenizer, SignalConfig(store=str(store), progress=False))
    return lm, prep


def test_trajectory_has_every_epoch_and_loss_drops(tmp_path, model_dir, alpaca_file):
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store")
    base = lm.fingerprint
    frames, fps, trained = train_reference(lm, prep, tmp_path / "ref", CFG)
    assert len(frames) == 3 and len(set(fps)) == 3 and fps[0] == base and trained.fingerprint == fps[2]
    means = [f["loss"].mean() for f in frames]
    assert means[2] < means[1] < means[0]
    # the stored last epoch equals a fresh load of the saved adapter (the reference model)
    ref = load_model(str(model_dir), adapter=str(tmp_path / "ref" / "epoch-2"), device="cpu")
    assert ref.fingerprint == fps[2]
    # lm.model was trained in place: lm keeps the base's fingerprint and says whose weights its module now holds (the
    # trained handle's), and a pass of it under the base's fingerprint is refused instead of being stored under the
    # wrong key; nothing is set on the torch module itself
    assert lm.fingerprint == base and lm.trained_into == fps[2] and trained.model.get_base_model() is lm.model
    assert not [k for k in vars(lm.model) if k.startswith("siftlm")]
    with pytest.raises(RuntimeError, match="trained in place since it was loaded"):
        run_pass(prep, "uncond", lm)
    from siftlm.signals.losses import loss_pass

    direct = loss_pass(lm.model, prep.encoded, pad_id=lm.tokenizer.pad_token_id)["loss"]
    np.testing.assert_allclose(direct, frames[2]["loss"], atol=1e-5)
    again, _ = _setup(model_dir, alpaca_file, tmp_path / "store")
    reused = train_reference(again, prep, tmp_path / "ref", CFG)         # reused: the model is still the base
    assert again.fingerprint == base and again.trained_into is None and reused.model is None


def test_resume_after_a_crash_gives_the_same_adapter(tmp_path, model_dir, alpaca_file, monkeypatch):
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store")
    clean_frames, fps, _ = train_reference(lm, prep, tmp_path / "clean", CFG)
    clean = load_file(tmp_path / "clean" / "epoch-2" / "adapter_model.safetensors")

    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store2")
    real = trajectory.response_nll
    steps = {"n": 0}

    def crash_in_epoch_2(model, batch):
        steps["n"] += 1
        if (tmp_path / "crashy" / "epoch-1.done").exists():
            raise KeyboardInterrupt("simulated crash in epoch 2")
        return real(model, batch)

    monkeypatch.setattr(trajectory, "response_nll", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_reference(lm, prep, tmp_path / "crashy", CFG)
    assert not (tmp_path / "crashy" / "epoch-2").exists()
    monkeypatch.setattr(trajectory, "response_nll", real)
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store3")   # resumed against a store without P_0
    frames2, fps2, _ = train_reference(lm, prep, tmp_path / "crashy", CFG)
    np.testing.assert_allclose(frames2[0]["loss"], clean_frames[0]["loss"], atol=1e-6)  # P_0 is the base model
    resumed = load_file(tmp_path / "crashy" / "epoch-2" / "adapter_model.safetensors")
    assert clean.keys() == resumed.keys()
    for k in clean:
        torch.testing.assert_close(clean[k], resumed[k], atol=1e-6, rtol=1e-5)


def test_other_data_in_the_same_folder_is_an_error(tmp_path, model_dir, alpaca_file):
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store")
    train_reference(lm, prep, tmp_path / "ref", TrainConfig(epochs=1, token_budget=512))
    fresh, _ = _setup(model_dir, alpaca_file, tmp_path / "store")      # lm itself now holds the trained weights
    with pytest.raises(RuntimeError, match=r"holds a reference training with config.epochs 1 \(now 2\); use another folder"):
        train_reference(fresh, prep, tmp_path / "ref", TrainConfig(epochs=2, token_budget=512))


def test_trajectory_is_recomputed_from_saved_adapters_for_a_new_store(tmp_path, model_dir, alpaca_file):
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store")
    frames, fps, _ = train_reference(lm, prep, tmp_path / "ref", CFG)
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "other-store")   # same training folder, empty store
    frames2, fps2, _ = train_reference(lm, prep, tmp_path / "ref", CFG)
    assert fps2 == fps
    for a, b in zip(frames, frames2, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], atol=1e-5)


def test_full_fine_tuning_saves_a_loadable_model_with_the_same_fingerprint(tmp_path, model_dir, alpaca_file):
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store")
    cfg = TrainConfig(epochs=1, lr=1e-3, token_budget=512, full=True)
    frames, fps, _ = train_reference(lm, prep, tmp_path / "full", cfg)
    assert frames[1]["loss"].mean() < frames[0]["loss"].mean()
    saved = load_model(str(tmp_path / "full" / "epoch-1"), device="cpu")   # a standalone model folder
    assert saved.fingerprint == fps[1]
    lm2, prep2 = _setup(model_dir, alpaca_file, tmp_path / "store2")
    frames2, _, _ = train_reference(lm2, prep2, tmp_path / "full", cfg)        # recomputed from the saved model
    np.testing.assert_allclose(frames2[1]["loss"], frames[1]["loss"], atol=1e-5)


def test_gradient_checkpointing_trains_the_same_adapter(tmp_path, model_dir, alpaca_file):
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store")
    plain, fps, _ = train_reference(lm, prep, tmp_path / "plain", CFG)
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store2")
    ckpt, fps2, _ = train_reference(lm, prep, tmp_path / "ckpt", TrainConfig(**{**CFG.__dict__, "gradient_checkpointing": True}))
    assert fps2 == fps                          # same weights: checkpointing trades memory for time, not numbers
    np.testing.assert_allclose(ckpt[-1]["loss"], plain[-1]["loss"], atol=1e-6)


def test_an_identity_written_before_a_setting_existed_still_matches(tmp_path, model_dir, alpaca_file, monkeypatch):
    import json

    from siftlm.train import reference

    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "store")
    _, fps, _ = train_reference(lm, prep, tmp_path / "ref", TrainConfig(epochs=1, token_budget=512))
    ident = tmp_path / "ref" / "siftlm-identity.json"
    old = json.loads(ident.read_text())
    del old["config"]["max_grad_norm"]                               # as if written before the setting existed
    ident.write_text(json.dumps(old))
    weights = {p.name: p.read_bytes() for p in (tmp_path / "ref" / "epoch-1").iterdir() if p.is_file()}
    fresh, _ = _setup(model_dir, alpaca_file, tmp_path / "store")      # lm itself now holds the trained weights
    monkeypatch.setattr(reference, "train", lambda *a, **k: pytest.fail("trained again instead of reusing the folder"))
    _, again, _ = train_reference(fresh, prep, tmp_path / "ref", TrainConfig(epochs=1, token_budget=512))   # no error
    assert again == fps and json.loads(ident.read_text()) == old       # the folder, as it was, is reused
    assert weights == {p.name: p.read_bytes() for p in (tmp_path / "ref" / "epoch-1").iterdir() if p.is_file()}


KILLED_IN_EVAL = """
import os, signal, sys
from siftlm.config import SignalConfig, TrainConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model
from siftlm.signals.prepare import prepare
from siftlm.train import reference
model_dir, data, store, out = sys.argv[1:5]
lm = load_model(model_dir, device="cpu", quiet=True)
prep = prepare(read_dataset(data), lm.tokenizer, SignalConfig(store=store, progress=False))
real = reference.run_pass
def dying(prep, name, model, label=None, **k):
    if label == "eval P_1":             # epoch 1's weights are saved; killed during its evaluation
        os.kill(os.getpid(), signal.SIGKILL)
    return real(prep, name, model, label=label, **k)
reference.run_pass = dying
reference.train_reference(lm, prep, out, TrainConfig(epochs=2, lr=5e-3, token_budget=512, lora_r=4, seed=0))
"""


def test_kill_9_during_an_epochs_evaluation_redoes_only_the_evaluation(tmp_path, model_dir, alpaca_file, monkeypatch):
    from tests.conftest import run_killed

    run_killed(tmp_path, KILLED_IN_EVAL, model_dir, alpaca_file, tmp_path / "st", tmp_path / "ref")
    epoch1 = tmp_path / "ref" / "epoch-1"
    assert (epoch1 / "adapter_model.safetensors").exists() and not epoch1.with_name("epoch-1.done").exists()
    saved = (epoch1 / "adapter_model.safetensors").stat().st_mtime_ns
    steps = []
    real = trajectory.response_nll
    monkeypatch.setattr(trajectory, "response_nll", lambda m, b: steps.append(1) or real(m, b))
    lm, prep = _setup(model_dir, alpaca_file, tmp_path / "st")
    frames, fps, _ = train_reference(lm, prep, tmp_path / "ref", CFG)
    n_batches = len(trajectory.plan_batches([len(e.input_ids) for e in prep.encoded], CFG.token_budget))
    assert len(steps) == n_batches                                             # epoch 2 only: epoch 1 was kept
    assert (epoch1 / "adapter_model.safetensors").stat().st_mtime_ns == saved and epoch1.with_name("epoch-1.done").exists()
    monkeypatch.undo()
    lm2, prep2 = _setup(model_dir, alpaca_file, tmp_path / "st-clean")
    clean, clean_fps, _ = train_reference(lm2, prep2, tmp_path / "clean", CFG)
    assert fps == clean_fps                                                    # the same weights, epoch by epoch
    for a, b in zip(frames, clean, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], atol=1e-6)


@pytest.fixture
def small_disk(tmp_path):
    """A 320 KB tmpfs: a real full disk (skipped where mounting is not allowed)."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_disk_during_training_is_one_line_and_leaves_no_temporaries(tmp_path, model_dir, alpaca_file,
                                                                                   small_disk):
    from typer.testing import CliRunner

    from siftlm.cli import app

    (small_disk / "filler").write_bytes(b"x" * 200_000)                     # leave less than an adapter's room
    res = CliRunner().invoke(app, ["train", str(alpaca_file), "--model", str(model_dir), "--out", str(small_disk / "ref"),
                                   "--store", str(tmp_path / "st"), "--epochs", "1", "--train-budget", "512",
                                   "--lora-r", "64"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"no space left on device writing {small_disk / 'ref' / 'epoch-1'}" in " ".join(res.output.split())
    assert not list((small_disk / "ref").glob("*.tmp")) and not (small_disk / "ref" / "epoch-1").exists()

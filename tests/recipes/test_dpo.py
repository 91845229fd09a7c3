"""`siftlm dpo` and `siftlm analyze dpo-length` end to end on a tiny model."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.train.dpo_losses import per_pair

runner = CliRunner()


def test_dpo_cli_trains_resumes_and_analyzes(tmp_path, model_dir, pair_file):
    from safetensors.torch import load_file

    args = ["dpo", str(pair_file), "--model", str(model_dir), "--loss", "davir", "--max-steps", "6", "--batch-size", "4",
            "--lr", "1e-2", "--save-steps", "3", "--out", str(tmp_path / "dpo"), "--store", str(tmp_path / "st")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "dpo" / "siftlm-dpo.json").read_text())
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)          # policy == reference at step 0
    assert losses[-1] < losses[0]
    weights = load_file(tmp_path / "dpo" / "final" / "adapter_model.safetensors")
    assert any(float(v.abs().max()) > 0 for k, v in weights.items() if "lora_B" in k)   # B starts at 0
    # a rerun with more steps resumes from checkpoint-6 instead of starting over
    res = runner.invoke(app, args[:7] + ["8"] + args[8:])
    assert res.exit_code == 0, res.output
    history = json.loads((tmp_path / "dpo" / "siftlm-dpo.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 9))
    assert [h["loss"] for h in history if "loss" in h][:6] == losses    # the first 6 steps come from the checkpoint

    other = runner.invoke(app, [*args[:5], "sigmoid", *args[6:]])            # another loss into the same folder
    assert other.exit_code == 1 and "holds a DPO run with loss \"davir\" (now \"sigmoid\")" in " ".join(other.output.split())

    res = runner.invoke(app, ["analyze", "dpo-length", str(pair_file), "--model", str(model_dir), "--adapter",
                              str(tmp_path / "dpo" / "final"), "--out", str(tmp_path / "an"), "--store", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    table = pd.DataFrame(json.loads((tmp_path / "an" / "dpo_length.json").read_text()))
    assert {"sigmoid", "ipo", "davir", "hinge"} <= set(table["loss"])
    pairs = pd.read_parquet(tmp_path / "an" / "pairs.parquet")
    from scipy import stats

    davir_beta = table.set_index("loss").loc["davir", "beta"]
    assert davir_beta == pytest.approx(summary["beta"], rel=1e-5)      # the beta the policy was trained with
    r = stats.pearsonr(pairs["length_diff"], per_pair("davir", pairs, davir_beta).numpy())[0]
    assert table.set_index("loss").loc["davir", "pearson"] == pytest.approx(r, rel=1e-9)
    assert (tmp_path / "an" / "dpo_length.png").stat().st_size > 5000
    page = (tmp_path / "an" / "report.html").read_text()
    assert "data:image/png;base64," in page and f"{table.set_index('loss').loc['davir', 'pearson']:+.3f}" in page
    assert np.isfinite(pairs["davir_margin"]).all()
    res = runner.invoke(app, ["select", str(tmp_path / "an" / "pairs.parquet"), "--data", str(pair_file), "--by",
                              "davir_margin", "--budget", "4", "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    sel = pd.read_parquet(tmp_path / "sel" / "selection.parquet")
    assert set(sel["id"]) == set(pairs.nlargest(4, "davir_margin")["id"])


def test_dpo_cli_full_fine_tuning_saves_a_standalone_model(tmp_path, model_dir, pair_file):
    res = runner.invoke(app, ["dpo", str(pair_file), "--model", str(model_dir), "--loss", "ipo", "--full", "--max-steps",
                              "2", "--batch-size", "4", "--out", str(tmp_path / "dpo"), "--store", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "dpo" / "siftlm-dpo.json").read_text())
    assert summary["beta"] == 0.1 and len([h for h in summary["log_history"] if "loss" in h]) == 2
    assert (tmp_path / "dpo" / "final" / "model.safetensors").exists()
    from siftlm.models.load import load_model

    final = load_model(str(tmp_path / "dpo" / "final"), device="cpu")        # loads on its own, no adapter
    base = load_model(str(model_dir), device="cpu")
    changed = [n for n, p in final.model.named_parameters() if not torch.equal(p, dict(base.model.named_parameters())[n])]
    assert changed                                                          # the full model was trained


KILLED_DPO = """
import os, signal, sys
from transformers import TrainerCallback
from siftlm.config import DPOTrainConfig, SignalConfig
from siftlm.recipes.dpo import run_dpo
pairs, model, out, store = sys.argv[1:5]
class Killer(TrainerCallback):        # runs before the mark: checkpoint-6 is written but never marked done
    def on_save(self, args, state, control, **kw):
        if state.global_step == 6:
            os.kill(os.getpid(), signal.SIGKILL)
run_dpo(pairs, model, out, SignalConfig(store=store, progress=False),
        DPOTrainConfig(loss="davir", max_steps=8, batch_size=4, lr=1e-2, save_steps=3), callbacks=[Killer()])
"""


def test_kill_9_while_a_dpo_checkpoint_is_saved_resumes_from_the_last_marked_one(tmp_path, model_dir, pair_file):
    from tests.conftest import run_killed

    run_killed(tmp_path, KILLED_DPO, pair_file, model_dir, tmp_path / "dpo", tmp_path / "st")
    out = tmp_path / "dpo"
    assert (out / "checkpoint-6").exists() and not (out / "checkpoint-6.done").exists() and (out / "checkpoint-3.done").exists()
    args = ["dpo", str(pair_file), "--model", str(model_dir), "--loss", "davir", "--max-steps", "8", "--batch-size", "4",
            "--lr", "1e-2", "--save-steps", "3", "--store", str(tmp_path / "st")]
    assert runner.invoke(app, [*args, "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "clean")]).exit_code == 0
    resumed, clean = ([h["loss"] for h in json.loads((d / "siftlm-dpo.json").read_text())["log_history"] if "loss" in h]
                      for d in (out, tmp_path / "clean"))
    assert len(resumed) == len(clean) == 8
    np.testing.assert_allclose(resumed, clean, rtol=1e-4)                  # steps 4-8 redone from checkpoint-3

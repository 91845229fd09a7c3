"""`siftlm experiment` on a tiny model: every cell, the table, the paired comparison, and resume after a crash."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.config import SignalConfig
from siftlm.evaluate.sets import as_dataset, load_eval_set
from siftlm.models.load import load_model
from siftlm.recipes import experiment
from siftlm.signals.losses import loss_pass
from siftlm.signals.prepare import prepare
from siftlm.train import sft
from tests.conftest import alpaca_rows

runner = CliRunner()


@pytest.fixture
def grid(tmp_path, alpaca_file, model_dir):
    from siftlm.data import read_dataset

    ids = [e.id for e in read_dataset(alpaca_file).examples]
    rng = np.random.default_rng(0)
    pd.DataFrame({"id": ids, "davir": rng.random(len(ids))}).to_parquet(tmp_path / "scores.parquet")
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(8, seed=9)))
    (tmp_path / "grid.yaml").write_text(f"""
data: {alpaca_file}
scores: scores.parquet
model: {model_dir}
methods: [random, "highest:davir", "lowest:davir", full]
budgets: [0.25, 12]
seeds: [0, 1]
eval: eval.jsonl
n_boot: 200
out: exp
signals: {{store: {tmp_path / 'st'}}}
train: {{epochs: 1, lr: 0.005, token_budget: 512}}
""")
    return tmp_path / "grid.yaml"


def test_experiment_runs_every_cell_and_compares_with_random(grid, tmp_path, monkeypatch, model_dir):
    res = runner.invoke(app, ["experiment", str(grid)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "exp"
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 3 * 2 * 2 + 2                                     # full once per seed
    assert set(table.loc[table["method"] == "highest:davir", "selected"]) == {6, 12}
    summary = json.loads((out / "results.json").read_text())
    # the paired difference is the mean over examples of (method's seed-mean loss - random's), recomputed here
    def seed_mean(name, budget):
        files = [out / "cells" / f"{name}-b{budget}-s{s}" / "losses.parquet" for s in (0, 1)]
        return pd.concat([pd.read_parquet(f).set_index("id")["loss"] for f in files], axis=1).mean(axis=1)
    want = (seed_mean("highest-davir", 0.25) - seed_mean("random", 0.25)).mean()
    got = next(p for p in summary["paired_vs_random"] if p["method"] == "highest:davir" and p["budget"] == 0.25)
    assert got["diff"] == pytest.approx(want, abs=1e-12) and got["low"] <= got["diff"] <= got["high"]
    assert "| highest:davir |" in (out / "results.md").read_text()
    # each cell is evaluated with its own trained model: recomputed here without the store, and unlike the base's
    cell = out / "cells" / "highest-davir-b0.25-s0"
    items = as_dataset(load_eval_set(str(tmp_path / "eval.jsonl")), "eval")
    direct = {}
    for name, spec in (("trained", cell / "model" / "final"), ("base", model_dir)):
        lm = load_model(str(spec), quiet=True)
        prep = prepare(items, lm.tokenizer, SignalConfig(progress=False))
        direct[name] = loss_pass(lm.model, prep.encoded, pad_id=lm.tokenizer.pad_token_id)["loss"]
    stored = pd.read_parquet(cell / "losses.parquet")["loss"].to_numpy()
    np.testing.assert_allclose(stored, direct["trained"], atol=1e-5)
    assert np.abs(stored - direct["base"]).max() > 1e-3
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 1
    monkeypatch.setattr(sft, "train", lambda *a, **k: pytest.fail("a finished cell ran again"))
    monkeypatch.setattr(experiment, "finetune", lambda *a, **k: pytest.fail("a finished cell ran again"))
    assert runner.invoke(app, ["experiment", str(grid)]).exit_code == 0


def test_a_killed_experiment_redoes_only_the_cell_in_progress(grid, tmp_path, monkeypatch):
    real, calls = experiment.finetune, []

    def crashing(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(experiment, "finetune", crashing)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(experiment.load_grid(grid))
    calls.clear()
    monkeypatch.setattr(experiment, "finetune", lambda *a, **k: calls.append(1) or real(*a, **k))
    experiment.run_experiment(experiment.load_grid(grid))
    assert len(calls) == 14 - 3                                            # the 3 finished cells were not redone


def test_grid_files_are_checked(tmp_path):
    (tmp_path / "g.yaml").write_text("methds: [random]\n")
    res = runner.invoke(app, ["experiment", str(tmp_path / "g.yaml")])
    assert res.exit_code == 1 and "unknown key 'methds' (did you mean 'methods'?)" in res.stderr

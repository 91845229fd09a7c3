"""`siftlm finetune` then `siftlm evaluate` on a tiny model: held-out loss, outputs, judging through the loopback."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.evaluate.sets import load_eval_set
from tests.conftest import alpaca_rows
from tests.evaluate.loopback import Rules, serve

runner = CliRunner()


@pytest.fixture
def eval_file(tmp_path):
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps({"id": f"e{i}", **r}) + "\n" for i, r in enumerate(alpaca_rows(10, seed=7))))
    return path


def test_builtin_sets_are_the_papers_sets():
    ae, mt = load_eval_set("builtin:alpaca-eval"), load_eval_set("builtin:mt-bench")
    assert len(ae) == 805 and all(len(i.turns) == 1 and i.references for i in ae)
    assert len(mt) == 80 and all(len(i.turns) == 2 for i in mt) and sum(1 for i in mt if i.references) == 30
    assert {i.category for i in mt if i.references} == {"reasoning", "math", "coding"}


def test_finetune_then_evaluate(tmp_path, model_dir, alpaca_file, eval_file):
    from siftlm.models.load import load_model

    res = runner.invoke(app, ["finetune", str(alpaca_file), "--model", str(model_dir), "--out", str(tmp_path / "ft"),
                              "--store", str(tmp_path / "st"), "--epochs", "2", "--lr", "5e-3", "--train-budget", "512"])
    assert res.exit_code == 0, res.output
    final = tmp_path / "ft" / "final"
    assert (final / "adapter_model.safetensors").exists() and not (final / "siftlm-optimizer.pt").exists()
    args = ["evaluate", str(final), "--eval", str(eval_file), "--store", str(tmp_path / "st"), "--out", str(tmp_path / "ev")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    losses = pd.read_parquet(tmp_path / "ev" / "heldout" / "losses.parquet")
    s = summary["sets"]["heldout"]["loss"]
    assert s["n"] == 10 and s["mean"] == pytest.approx(losses["loss"].mean()) and s["low"] < s["mean"] < s["high"]
    base = runner.invoke(app, ["evaluate", str(model_dir), "--eval", str(eval_file), "--store", str(tmp_path / "st"),
                               "--out", str(tmp_path / "ev0")])
    assert base.exit_code == 0, base.output
    base_loss = json.loads((tmp_path / "ev0" / "summary.json").read_text())["sets"]["heldout"]["loss"]["mean"]
    assert s["mean"] < base_loss                       # training on the same kind of data lowers held-out loss
    # the saved adapter loads with plain peft, and gives the loss siftlm measured
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(final))
    ours = load_model(str(final), device="cpu")
    for (n1, p1), (n2, p2) in zip(sorted(plain.named_parameters()), sorted(ours.model.named_parameters()), strict=True):
        assert n1 == n2 and np.allclose(p1.detach().numpy(), p2.detach().numpy())


def test_generation_and_judging_through_the_loopback(tmp_path, model_dir, eval_file):
    rules = Rules()
    srv, url = serve(rules)
    try:
        args = ["evaluate", str(model_dir), "--eval", str(eval_file), "--store", str(tmp_path / "st"), "--out",
                str(tmp_path / "ev"), "--judge-url", url, "--judge-model", "loop", "--max-new-tokens", "8", "--no-loss"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    finally:
        srv.shutdown()
    outputs = json.loads((tmp_path / "ev" / "heldout" / "outputs.json").read_text())
    assert len(outputs) == 10 and set(outputs[0]) >= {"instruction", "output", "generator", "dataset"}
    j = json.loads((tmp_path / "ev" / "summary.json").read_text())["sets"]["heldout"]["judge"]
    rows = pd.read_parquet(tmp_path / "ev" / "heldout" / "judgments.parquet")
    # neither side says GOOD: the loopback judge always answers "Output (a)", so both orders cancel to a tie
    assert (rows["preference"] == 0.5).all() and j["win_rate"]["win_rate"] == pytest.approx(50.0)
    assert rules.requests == 20

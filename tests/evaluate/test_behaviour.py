"""Behaviour evaluation: the detectors on a model's answers, the propensities against a per-example loss computed
directly, the continuations kept out of every pool, and `siftlm evaluate --behaviour`."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.config import SignalConfig
from siftlm.data.inject import REFUSALS
from siftlm.evaluate import behaviour
from siftlm.evaluate.sets import EvalItem
from siftlm.models.load import load_model
from siftlm.models.template import encode

runner = CliRunner()


def test_propensity_continuations_are_not_injected_junk_and_skip_what_a_pool_holds():
    assert not set(behaviour.PROPENSITY_REFUSALS) & set(REFUSALS)
    first = behaviour.foreign_continuations()
    assert len(first) == behaviour.FOREIGN_COUNT and all(len(t) <= behaviour.FOREIGN_CHARS for t in first)
    from siftlm.assets import package_file

    answers = [r["output"].strip() for r in json.loads(package_file("alpaca_zh_demo").read_text(encoding="utf-8"))]
    held = next(a for a in reversed(answers) if a.startswith(first[0]))
    skipped = behaviour.foreign_continuations(exclude={held})
    assert first[0] not in skipped and skipped[:-1] == first[1:]      # the next answer steps in


def test_detect_answers_flags_by_item():
    items = [EvalItem("a", ["Write a poem."]), EvalItem("b", ["Name a colour."]), EvalItem("c", ["Say hi."])]
    frame = behaviour.detect_answers(items, ["I'm sorry, but I can't help with that.", "Red.", "Say hi."])
    assert list(frame["refusal"]) == [1.0, 0.0, 0.0] and list(frame["echo"]) == [0.0, 0.0, 1.0]
    assert list(frame["words"]) == [10.0, 1.0, 2.0] and frame["detected"].iloc[1] == ""


def test_propensity_is_the_per_token_nll_of_the_continuation_computed_one_by_one(model_dir, tmp_path):
    lm = load_model(str(model_dir), quiet=True)
    items = [EvalItem(f"q{k}", [f"Question number {k} about " + "things " * k]) for k in range(5)]
    conts = {"refusal": ["No.", "I refuse to do that."], "foreign": ["你好"]}
    signals = SignalConfig(store=str(tmp_path / "st"), max_length=256, progress=False)
    got = behaviour.propensity(lm, items, conts, signals, "set")
    for k, item in enumerate(items):
        for kind, texts in conts.items():
            msgs = [{"role": "user", "content": item.turns[0]}, {"role": "assistant", "content": texts[k % len(texts)]}]
            enc = encode(lm.tokenizer, "x", msgs)
            ids, labels = torch.tensor([enc.input_ids]), torch.tensor([enc.labels])
            with torch.no_grad():
                logits = lm.model(input_ids=ids).logits[0, :-1]
            target = labels[0, 1:]
            keep = target != -100
            want = torch.nn.functional.cross_entropy(logits[keep], target[keep]).item()
            assert got.loc[k, f"prop_{kind}"] == pytest.approx(want, abs=1e-4)


def test_evaluate_behaviour_writes_per_item_rows_and_rates(model_dir, tmp_path):
    rows = [{"instruction": f"Item {k}: write one line.", "input": "", "output": "A line."} for k in range(6)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["evaluate", str(model_dir), "--eval", str(tmp_path / "eval.jsonl"), "--behaviour",
                              "--max-new-tokens", "6", "--out", str(tmp_path / "ev"), "--store", str(tmp_path / "st")])
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(tmp_path / "ev" / "eval" / "behaviour.parquet")
    assert len(frame) == 6 and {"generation", "refusal", "wrong_language", "prop_refusal", "prop_foreign"} <= set(frame)
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())["sets"]["eval"]
    assert summary["behaviour"]["refusal"]["mean"] == pytest.approx(frame["refusal"].mean())
    losses = pd.read_parquet(tmp_path / "ev" / "eval" / "losses.parquet")
    assert summary["loss_per_token"]["mean"] == pytest.approx(losses["nll_sum"].sum() / losses["n_tokens"].sum())
    assert summary["loss"]["mean"] == pytest.approx(losses["loss"].mean())
    assert "held-out loss per token" in res.output and "refusal rate" in res.output
    assert np.isfinite(frame["prop_refusal"]).all()

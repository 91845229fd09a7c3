"""Mixing several sources under their own budgets."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.config import SelectConfig
from siftlm.select.mix import load_mix, mix
from siftlm.select.run import run_selection
from tests.select.test_run import _source

runner = CliRunner()


def test_mix_two_sources_with_their_own_methods_and_budgets(tmp_path):
    a, _ = _source(tmp_path, "alpaca", 40, 0)
    g, _ = _source(tmp_path, "gsm", 30, 1)
    (tmp_path / "mix.yaml").write_text(f"""
out: {tmp_path / 'mixed'}
sources:
  - {{name: alpaca, scores: alpaca.parquet, data: {a.name}, method: topk, by: davir, budget: 0.25}}
  - {{name: gsm, scores: gsm.parquet, data: {g.name}, method: davir+dpp, features: gsm.npy, budget: 7}}
""")
    res = runner.invoke(app, ["mix", str(tmp_path / "mix.yaml")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "mixed"
    sel = pd.read_parquet(out / "selection.parquet")
    assert sel["source"].value_counts().to_dict() == {"alpaca": 10, "gsm": 7}
    assert sel["mix_rank"].tolist() == list(range(1, 18))
    alpaca_scores = pd.read_parquet(tmp_path / "alpaca.parquet")
    assert set(sel[sel["source"] == "alpaca"]["id"]) == set(alpaca_scores.nlargest(10, "davir")["id"])
    single = run_selection(SelectConfig(scores=str(tmp_path / "gsm.parquet"), data=str(g), method="davir+dpp",
                                        features=str(tmp_path / "gsm.npy"), budget=7), tmp_path / "gsm-alone")
    assert sel[sel["source"] == "gsm"]["id"].tolist() == single.selection["id"].tolist()
    lines = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    assert len(lines) == 17 and sum(r["instruction"].startswith("[gsm]") for r in lines) == 7
    summary = json.loads((out / "mix.json").read_text())
    assert summary["selected"] == 17 and summary["sources"]["gsm"]["method"] == "davir+dpp"
    for s in summary["sources"].values():
        assert s["read"] == s["scored"] + s["rejected"] + s["not_scored"]


def test_mix_keeps_an_example_selected_by_two_sources_once(tmp_path):
    a, _ = _source(tmp_path, "a", 20, 0)
    cfg = dict(scores=str(tmp_path / "a.parquet"), data=str(a), method="topk", by="davir", budget=5)
    summary = mix([SelectConfig(name="one", **cfg), SelectConfig(name="two", **{**cfg, "budget": 8})], tmp_path / "m")
    sel = pd.read_parquet(tmp_path / "m" / "selection.parquet")
    assert summary["duplicates_across_sources"] == 5 and len(sel) == 8 and sel["id"].is_unique
    assert sel["source"].tolist() == ["one"] * 5 + ["two"] * 3


def test_mix_file_errors_name_the_problem(tmp_path):
    (tmp_path / "m.yaml").write_text("sources:\n  - {scores: s.parquet, data: d.jsonl, budgett: 3}\n")
    with pytest.raises(ValueError, match=r"sources\[0\]: unknown key 'budgett' \(did you mean 'budget'\?\)"):
        load_mix(tmp_path / "m.yaml")
    (tmp_path / "m.yaml").write_text("sources: []\n")
    with pytest.raises(ValueError, match="non-empty 'sources'"):
        load_mix(tmp_path / "m.yaml")


def test_mix_dedups_by_content_not_by_the_records_own_ids(tmp_path):
    """Two files whose records carry ids 0, 1, 2 ...: equal ids are not duplicates, equal content is."""
    from siftlm.data import read_dataset

    rows_a = [{"id": i, "instruction": f"a{i}", "output": f"x{i}"} for i in range(6)]
    rows_b = [{"id": i, "instruction": f"b{i}", "output": f"y{i}"} for i in range(5)] + [
        {"id": 99, "instruction": "a0", "output": "x0"}]                  # same content as rows_a[0]
    for name, rows in (("a", rows_a), ("b", rows_b)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        ids = [e.id for e in read_dataset(tmp_path / f"{name}.jsonl").examples]
        pd.DataFrame({"id": ids, "davir": np.arange(len(ids), 0, -1.0)}).to_parquet(tmp_path / f"{name}.parquet")
    srcs = [SelectConfig(name=n, scores=str(tmp_path / f"{n}.parquet"), data=str(tmp_path / f"{n}.jsonl"), budget=6,
                         by="davir") for n in ("a", "b")]
    summary = mix(srcs, tmp_path / "m")
    assert summary["duplicates_across_sources"] == 1 and summary["selected"] == 11




@pytest.mark.parametrize("name", ["../../../escaped", "/tmp/siftlm-escaped-abs", "a/b", "..", ".hidden"])
def test_hostile_source_names_are_refused_and_nothing_is_written_outside(tmp_path, name):
    a, _ = _source(tmp_path, "a", 10, 0)
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    (work / "mix.yaml").write_text(f"out: mixed\nsources:\n  - {{name: {json.dumps(name)}, scores: {tmp_path / 'a.parquet'}, "
                                   f"data: {a}, budget: 3}}\n")
    before = {p for p in tmp_path.rglob("*")}
    res = runner.invoke(app, ["mix", str(work / "mix.yaml")])
    assert res.exit_code == 1 and "must be a plain file name" in res.output and "Traceback" not in res.output
    assert {p for p in tmp_path.rglob("*")} == before and not (tmp_path / "escaped").exists()
    assert not Path("/tmp/siftlm-escaped-abs").exists()


def test_mix_out_is_relative_to_the_file(tmp_path, monkeypatch):
    a, _ = _source(tmp_path, "a", 10, 0)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mix.yaml").write_text("out: mixed\nsources:\n  - {scores: ../a.parquet, data: ../a.jsonl, "
                                               "budget: 3, by: davir}\n")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["mix", "sub/mix.yaml"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sub" / "mixed" / "selected.jsonl").exists() and not (tmp_path / "mixed").exists()
    sources, extra = load_mix(tmp_path / "sub" / "mix.yaml")
    assert extra["out"] == str(tmp_path / "sub" / "mixed") and sources[0].name == "a"

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from siftlm import pipeline
from siftlm.cli import app

runner = CliRunner()


def test_inspect_reports_format_counts_and_rejects(tmp_path, alpaca_file):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{oops\n{"instruction": "c", "output": ""}\n')
    res = runner.invoke(app, ["inspect", str(bad), "--rejects", str(tmp_path / "rej.jsonl")])
    assert res.exit_code == 0, res.output
    assert "alpaca" in res.output and "malformed JSON" in res.output and "empty response" in res.output
    assert "[output] empty response" in res.output  # the [field] is not eaten as rich markup
    rows = [json.loads(x) for x in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [2, 3]


def test_inspect_exits_non_zero_when_nothing_is_valid(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": ""}\n')
    res = runner.invoke(app, ["inspect", str(bad)])
    assert res.exit_code == 1 and "nothing valid" in res.output


def _score_args(alpaca_file, model_dir, tmp_path):
    return ["score", str(alpaca_file), "--model", str(model_dir), "--out", str(tmp_path / "out"),
            "--store", str(tmp_path / "store"), "--epochs", "2", "--lr", "5e-3", "--train-budget", "512"]


def test_score_then_select_end_to_end(tmp_path, alpaca_file, model_dir, monkeypatch):
    res = runner.invoke(app, _score_args(alpaca_file, model_dir, tmp_path))
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert len(table) == 24
    for col in ("davir", "rho", "lp", "lp_app", "ifd", "el2n", "ppl", "forgetting", "tokens_out", "ppl_2"):
        assert col in table
    assert (table["davir"] - (table["base_loss"] - table["ref_loss"]) / table["base_loss"]).abs().max() < 1e-12
    # a second run reuses every pass and the trained reference: no model pass may run
    monkeypatch.setattr(pipeline, "loss_pass", lambda *a, **k: pytest.fail("recomputed a cached pass"))
    res = runner.invoke(app, _score_args(alpaca_file, model_dir, tmp_path))
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "scores.parquet"), table)

    res = runner.invoke(app, ["select", str(tmp_path / "out" / "scores.parquet"), "--data", str(alpaca_file),
                              "--by", "lp", "--budget", "5", "--out", str(tmp_path / "sel")])
    assert res.exit_code == 0, res.output
    sel = pd.read_parquet(tmp_path / "sel" / "selection.parquet")
    lowest = table.sort_values(["lp", "id"]).head(5)["id"].tolist()   # LP: keep lowest
    assert sel["id"].tolist() == lowest
    lines = (tmp_path / "sel" / "selected.jsonl").read_text().splitlines()
    src = {json.dumps(json.loads(x), sort_keys=True) for x in alpaca_file.read_text().splitlines()}
    assert len(lines) == 5 and all(json.dumps(json.loads(x), sort_keys=True) in src for x in lines)


def test_config_file_fills_options(tmp_path, alpaca_file):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("inspect:\n  show: 0\n")
    res = runner.invoke(app, ["--config", str(cfg), "inspect", str(alpaca_file)])
    assert res.exit_code == 0, res.output

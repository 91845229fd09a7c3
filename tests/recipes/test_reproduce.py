"""`siftlm reproduce` on a tiny model: every table's rows against direct computations on its own outputs."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.recipes.reproduce import _against, _claim

runner = CliRunner()


def test_verdicts():
    paper = {"a": -0.68, "b": -0.56}
    assert _against(-0.6, -0.7, -0.5, paper).startswith("agrees")
    assert _against(-0.2, -0.3, -0.1, paper) == "same sign, weaker than the paper"
    assert _against(0.2, 0.1, 0.3, paper) == "disagrees: opposite sign"
    assert _against(-0.133, -0.266, 0.010, paper).startswith("no sign detected")   # the point estimate's sign is not enough
    assert _against(0.05, -0.01, 0.1, paper).startswith("no sign detected")
    assert _claim("x", "t", (0.2, 0.05, 0.3), 9, "").verdict == "agrees"
    assert _claim("x", "t", (0.2, -0.05, 0.3), 9, "").verdict.startswith("inconclusive")


def test_reproduce_every_table_on_a_tiny_model(tmp_path, model_dir, alpaca_file, pair_file):
    out = tmp_path / "rep"
    res = runner.invoke(app, ["reproduce", "--model", str(model_dir), "--data", str(alpaca_file), "--pairs",
                              str(pair_file), "--out", str(out), "--store", str(tmp_path / "st"), "--epochs", "2",
                              "--lr", "5e-3", "--train-budget", "512", "--dpo-steps", "2", "--pair-limit", "12",
                              "--n-boot", "200", "--budget", "8"])
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "reproduce.json").read_text())["rows"]
    assert {r["table"] for r in rows} == {"davir-table1", "davir-table2", "davir-table3", "lp-table3", "dpp-eq3"}
    for r in rows:
        assert r["low"] <= r["ours"] + 1e-9 or r["table"] == "dpp-eq3"     # bootstrap CIs bracket the estimate
        assert r["verdict"] or r["table"] == "dpp-eq3"
    t = pd.read_parquet(out / "scores.parquet")
    length = t["n_prompt"] + t["n_response"]
    by = {(r["table"], r["quantity"]): r for r in rows}
    assert by["davir-table1", "loss ~ length (pearson)"]["ours"] == pytest.approx(
        stats.pearsonr(t["base_loss"], length).statistic, abs=1e-12)
    assert by["davir-table2", "|davir ~ length| (spearman)"]["ours"] == pytest.approx(
        abs(stats.spearmanr(t["davir"], length).statistic), abs=1e-12)
    assert by["lp-table3", "Kendall tau(LP(1), LP_app(1)), 2 epochs"]["ours"] == pytest.approx(
        stats.kendalltau(t["lp"], t["lp_app"]).statistic, abs=1e-12)
    pairs = pd.read_parquet(out / "dpo-length" / "pairs.parquet")
    table = pd.DataFrame(json.loads((out / "dpo-length" / "dpo_length.json").read_text())).set_index("loss")
    assert by["davir-table3", "davir objective ~ length difference (pearson)"]["ours"] == pytest.approx(
        table.loc["davir", "pearson"], abs=1e-9) and len(pairs) == 12    # the JSON keeps 10 digits
    ldd = by["dpp-eq3", "LDD(random) - LDD(dpp)"]
    assert np.isfinite(ldd["ours"]) and "k=8" in by["dpp-eq3", "LDD of the dpp subset (k=8)"]["quantity"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "DavIR Table 2" in page

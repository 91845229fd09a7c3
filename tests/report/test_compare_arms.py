"""runs/compare_arms.py compares two arms of a committed grid with the grid's own two-level bootstrap: against random
it gives exactly the grid's table (the same cells, items, token weights and resamples)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from siftlm.report.experiment import metric_matrix
from siftlm.stats import two_level_difference
from tests.conftest import runs_script

ROOT = Path(__file__).resolve().parents[2]
GRID = ROOT / "runs" / "results" / "smollm2-selects-gemma"


@pytest.fixture(scope="module")
def compare_arms():
    return runs_script("compare_arms")


@pytest.mark.parametrize("method", ["lowest:lp_app", "lowest:lp_app by gemma"])
def test_an_arm_against_random_equals_the_grids_own_comparison(compare_arms, method):
    cells, items = pd.read_parquet(GRID / "cells.parquet"), pd.read_parquet(GRID / "results.parquet")
    values, weights = metric_matrix(items[items["set"] == "heldout"], "loss_per_token")
    m, b = compare_arms.arm_rows(cells, values, method), compare_arms.arm_rows(cells, values, "random")
    assert m.shape == (3, 80) and b.shape == (5, 80)
    got = two_level_difference(m.to_numpy(), b.to_numpy(), n_boot=2000, seed=0, weights=weights)
    table = json.loads((GRID / "results.json").read_text())["tables"][0]
    want = next(r for r in table["rows"] if r["method"] == method)["vs_random"][0]
    assert (got["diff"], got["low"], got["high"]) == pytest.approx((want["diff"], want["low"], want["high"]), abs=1e-12)


def test_an_unknown_arm_is_refused_naming_the_methods(compare_arms):
    cells, items = pd.read_parquet(GRID / "cells.parquet"), pd.read_parquet(GRID / "results.parquet")
    values, _ = metric_matrix(items, "loss_per_token")
    with pytest.raises(SystemExit, match="no cells of method 'best'.*random"):
        compare_arms.arm_rows(cells, values, "best")

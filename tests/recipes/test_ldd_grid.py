"""LDD of every fine-tuned cell (the DPP paper's Figure 2 measured on experiment grids): against a brute-force
log-determinant, cached and reused, and the correlations with their partial version."""

import numpy as np
import pandas as pd
import pytest

from siftlm.diversity import unit_sphere
from siftlm.recipes import ldd_grid
from siftlm.signals.table import write_frame
from siftlm.stats import l2_normalize, spearman


def _rbf(x, gamma):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-gamma * d2)


def _brute_ldd(x, gamma, seed=0):
    """(1/n) log(det R / det L) with full determinants: when greedy takes every item of a subset, det L_n is the
    determinant of the whole subset's kernel."""
    n, d = x.shape
    ref = unit_sphere(n, d, seed)
    return (np.linalg.slogdet(_rbf(ref, gamma))[1] - np.linalg.slogdet(_rbf(x, gamma))[1]) / n


def test_cell_ldds_match_the_brute_force_log_determinant_and_are_cached(tmp_path):
    rng = np.random.default_rng(5)          # not seed 0: that would be the reference's own random vectors
    ids = [f"pool-{k:05d}" for k in range(30)]
    vectors = rng.normal(size=(30, 8))
    write_frame(pd.DataFrame({"id": ids, "vector": list(vectors)}), tmp_path / "feat.parquet", {"pass": "grads"})
    subsets = [ids[:6], ids[3:13], ids[10:30:2]]
    pd.DataFrame({"key": ["a", "b", "c"], "method": ["random", "x", "y"], "ids": subsets}).to_parquet(
        tmp_path / "cells.parquet")
    got = ldd_grid.cell_ldds(tmp_path, {"grads": tmp_path / "feat.parquet"}).set_index("key")
    x = l2_normalize(vectors)
    for key, sub in zip("abc", subsets, strict=True):
        pos = [ids.index(i) for i in sub]
        assert got.loc[key, "ldd"] == pytest.approx(_brute_ldd(x[pos], 1.0), rel=1e-6, abs=1e-8)
        assert got.loc[key, "n"] == len(sub)
    # cached: without the feature file the values come back unchanged; a changed file recomputes
    (tmp_path / "feat.parquet").rename(tmp_path / "gone.parquet")
    again = ldd_grid.cell_ldds(tmp_path, {}).set_index("key")
    assert again.loc["b", "ldd"] == pytest.approx(got.loc["b", "ldd"])
    write_frame(pd.DataFrame({"id": ids, "vector": list(vectors[::-1])}), tmp_path / "feat.parquet", {"pass": "grads"})
    changed = ldd_grid.cell_ldds(tmp_path, {"grads": tmp_path / "feat.parquet"}).set_index("key")
    pos = [ids.index(i) for i in subsets[1]]
    assert changed.loc["b", "ldd"] == pytest.approx(_brute_ldd(x[::-1][pos], 1.0), rel=1e-6)


def test_partial_spearman_removes_what_the_covariate_explains():
    rng = np.random.default_rng(1)
    z = rng.normal(size=200)
    x, y = z + 0.1 * rng.normal(size=200), z + 0.1 * rng.normal(size=200)
    assert spearman(x, y) > 0.9 and abs(ldd_grid._partial_spearman(x, y, z)) < 0.2
    w = rng.normal(size=200)
    assert ldd_grid._partial_spearman(w + 0.1 * z, w, z) > 0.9


def test_correlations_within_a_budget_and_verdicts():
    rng = np.random.default_rng(2)
    n = 12
    ldd = rng.normal(size=n)
    table = pd.DataFrame({"grid": "g", "budget": [0.1] * n, "unit": "examples", "ldd:grads": ldd,
                          "heldout:loss_per_token": ldd + 0.05 * rng.normal(size=n),
                          "response_tokens": rng.integers(100, 200, n).astype(float)})
    rows, skipped = ldd_grid.correlations(table, ["heldout:loss_per_token"], n_boot=200)
    assert skipped == []
    scopes = {(r["scope"], r["kind"]) for r in rows}
    assert ("all cells", "spearman") in scopes and ("g 0.1", "partial spearman | response tokens") in scopes
    sp = next(r for r in rows if r["scope"] == "all cells" and r["kind"] == "spearman")
    assert sp["r"] == pytest.approx(spearman(table["ldd:grads"], table["heldout:loss_per_token"]))
    assert sp["verdict"] == "agrees (same direction)"
    assert ldd_grid.verdict(-0.5, 0.2) == "no effect detected" and ldd_grid.verdict(-0.5, -0.1).startswith("does not")


def test_cells_without_recorded_tokens_get_them_from_the_scores(tmp_path):
    """Cells that ran before siftlm recorded their tokens (as the clean grids' did) get prompt and response tokens
    summed from the scores table over their ids, so the LDD partial correlation can hold tokens fixed; a cell with
    an id the scores do not hold is left empty rather than guessed."""
    from siftlm.config import ExperimentConfig
    from siftlm.recipes.experiment import fill_counts

    pd.DataFrame({"id": ["a", "b", "c"], "n_prompt": [3, 4, 5], "n_response": [10, 20, 30]}).to_parquet(
        tmp_path / "scores.parquet")
    cells = pd.DataFrame({"key": ["k1", "k2", "k3"], "method": ["random", "lowest:lp_app", "random"],
                          "ids": [["a", "c"], ["b"], ["a", "zz"]]})
    out = fill_counts(cells, str(tmp_path / "scores.parquet"), ExperimentConfig())
    assert out["response_tokens"].tolist()[:2] == [40.0, 20.0] and out["prompt_tokens"].tolist()[:2] == [8.0, 4.0]
    assert np.isnan(out["response_tokens"].iloc[2]) and (out["steps"].iloc[:2] > 0).all()


def test_every_measured_metric_is_correlated_behaviour_rates_included(tmp_path):
    """cell_metrics turns per-item rows into one column per set and metric (loss per token weighted by tokens, loss
    per item, behaviour rates where measured); measured_metrics picks all of them and no LDD column."""
    items = pd.DataFrame({"key": ["k1", "k1", "k2", "k2", "k1", "k2"],
                          "set": ["heldout"] * 4 + ["alpaca-eval"] * 2,
                          "loss": [1.0, 3.0, 2.0, 2.0, 5.0, 7.0], "n_tokens": [1, 3, 2, 2, 1, 1],
                          "refusal": [1.0, 0.0, 0.0, 0.0, None, None]})
    items.to_parquet(tmp_path / "results.parquet")
    pd.DataFrame({"key": ["k0", "k1", "k2"], "method": ["base model", "random", "lowest:lp_app"]}).to_parquet(
        tmp_path / "cells.parquet")
    m = ldd_grid.cell_metrics(tmp_path)
    assert list(m.index) == ["k1", "k2"]
    assert m.loc["k1", "heldout:loss_per_token"] == pytest.approx((1 * 1 + 3 * 3) / 4)
    assert m.loc["k1", "heldout:loss_per_item"] == pytest.approx(2.0)
    assert m.loc["k1", "heldout:refusal"] == 0.5 and m.loc["k2", "heldout:refusal"] == 0.0
    table = m.assign(**{"ldd:grads": [0.1, 0.2], "budget": 0.5})
    assert ldd_grid.measured_metrics(table) == ["heldout:loss_per_token", "heldout:loss_per_item", "heldout:refusal",
                                                "alpaca-eval:loss_per_token", "alpaca-eval:loss_per_item"]


def test_a_nearly_constant_metric_gives_no_correlation_and_is_said():
    """One refusal in 80 answers in a few cells is not a rate to rank: a bootstrap over its ties would give a CI that
    looks decisive. Fewer than 3 values over a scope's cells: no row, and the pair is named."""
    rng = np.random.default_rng(3)
    n = 10
    table = pd.DataFrame({"grid": "g", "budget": [0.5] * n, "unit": "examples", "ldd:grads": rng.normal(size=n),
                          "heldout:loss_per_token": rng.normal(size=n), "response_tokens": np.arange(n, dtype=float),
                          "heldout:wrong_language": [0.0] * 8 + [0.0125] * 2})
    rows, skipped = ldd_grid.correlations(table, ["heldout:loss_per_token", "heldout:wrong_language"], n_boot=100)
    assert {r["metric"] for r in rows} == {"heldout:loss_per_token"}
    assert skipped == [("heldout:wrong_language", "all cells"), ("heldout:wrong_language", "g 0.5")]

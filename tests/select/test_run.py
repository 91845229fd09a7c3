"""Selection from one source: each method through the one writer, and the named score+dpp methods."""

import json
from dataclasses import astuple

import numpy as np
import pandas as pd
import pytest

from siftlm.config import SelectConfig
from siftlm.select.run import resolve, run_selection
from tests.conftest import alpaca_rows


def test_resolve_gives_each_method_its_defaults():
    assert astuple(resolve(SelectConfig(method="davir+dpp"))) == astuple(SelectConfig(method="dpp", by="davir", lam=0.5,
                                                                                        budget=0.5))
    got = resolve(SelectConfig(method="tokens_out+dpp", lam=0.9))
    assert (got.method, got.by, got.lam) == ("dpp", "tokens_out", 0.9)
    got = resolve(SelectConfig(method="dpp"))
    assert (got.method, got.by, got.lam, got.budget) == ("dpp", "lp_app", None, 0.5)   # the default score
    got = resolve(SelectConfig())                # the measured junk filter: lowest lp_app keeping half
    assert (got.method, got.by, got.direction, got.budget) == ("topk", "lp_app", None, 0.5)
    got = resolve(SelectConfig(method="dedup"))
    assert (got.by, got.budget) == (None, None)              # dedup: input order, every non-duplicate
    with pytest.raises(ValueError, match="unknown method"):
        resolve(SelectConfig(method="best"))


def _source(tmp_path, name, n, seed):
    from siftlm.data import read_dataset

    path = tmp_path / f"{name}.jsonl"
    rows = alpaca_rows(n, seed=seed)
    for r in rows:
        r["instruction"] = f"[{name}] " + r["instruction"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = [e.id for e in read_dataset(path).examples]
    rng = np.random.default_rng(seed)
    pd.DataFrame({"id": ids, "davir": rng.random(n), "lp": rng.random(n)}).to_parquet(tmp_path / f"{name}.parquet")
    x = rng.standard_normal((n, 6))
    np.save(tmp_path / f"{name}.npy", x)
    return path, x


def test_score_plus_dpp_is_dpp_with_that_quality(tmp_path):
    path, _ = _source(tmp_path, "a", 40, 0)
    common = dict(scores=str(tmp_path / "a.parquet"), data=str(path), features=str(tmp_path / "a.npy"), budget=8)
    named = run_selection(SelectConfig(method="davir+dpp", **common), tmp_path / "named")
    explicit = run_selection(SelectConfig(method="dpp", by="davir", lam=0.5, **common), tmp_path / "explicit")
    plain = run_selection(SelectConfig(method="dpp", **common), tmp_path / "plain")
    assert named.selection["id"].tolist() == explicit.selection["id"].tolist()
    assert named.selection["id"].tolist() != plain.selection["id"].tolist()     # the quality changes the picks
    assert "davir=" in named.selection["reason"][0] and "lambda=0.5" in named.selection["reason"][0]
    # quality pulls the picks towards high davir
    table = pd.read_parquet(tmp_path / "a.parquet").set_index("id")
    assert table.loc[named.selection["id"], "davir"].mean() > table.loc[plain.selection["id"], "davir"].mean()


def test_direction_low_turns_the_dpp_quality_around(tmp_path):
    path, _ = _source(tmp_path, "a", 40, 0)
    common = dict(scores=str(tmp_path / "a.parquet"), data=str(path), features=str(tmp_path / "a.npy"), budget=8,
                  method="davir+dpp", lam=0.9)
    high = run_selection(SelectConfig(**common), tmp_path / "high")
    low = run_selection(SelectConfig(direction="low", **common), tmp_path / "low")
    table = pd.read_parquet(tmp_path / "a.parquet").set_index("id")
    assert table.loc[low.selection["id"], "davir"].mean() < table.loc[high.selection["id"], "davir"].mean()


def test_rank_is_the_selection_order_and_empty_for_rows_not_selected(tmp_path):
    path, _ = _source(tmp_path, "a", 20, 0)
    for method in ("topk", "random", "dpp"):
        res = run_selection(SelectConfig(scores=str(tmp_path / "a.parquet"), data=str(path), method=method, budget=4,
                                         by="davir", features=str(tmp_path / "a.npy")), tmp_path / method)
        t = pd.read_parquet(tmp_path / method / "scores.parquet")
        assert str(t["rank"].dtype) == "Int64" and t["rank"].isna().sum() == 16
        assert t.loc[t["selected"], "rank"].sort_values().tolist() == [1, 2, 3, 4]
        by_rank = t[t["selected"]].sort_values("rank")["id"].tolist()
        assert by_rank == res.selection["id"].tolist() == [e.id for e in res.examples]


@pytest.mark.parametrize("method, extra", [("topk", {}), ("random", {"seed": 3}), ("dpp", {"features": True}),
                                           ("davir+dpp", {"features": True}), ("cluster", {"features": True, "by": "lp"}),
                                           ("repr", {"features": True, "target": "centroid"})])
def test_a_token_budget_keeps_the_largest_selection_that_fits(tmp_path, method, extra):
    """Against brute force: the method at every count, the largest whose selection fits the budget."""
    from dataclasses import replace

    from siftlm.select.run import METHODS, resolve

    data, x = _source(tmp_path, "s", 40, 1)
    table = pd.read_parquet(tmp_path / "s.parquet")
    rng = np.random.default_rng(2)
    table["n_prompt"], table["n_response"] = rng.integers(5, 20, 40), rng.integers(1, 200, 40)
    table.to_parquet(tmp_path / "s.parquet")
    tokens = (table["n_prompt"] + table["n_response"]).to_numpy()
    features = {"features": str(tmp_path / "s.npy")} if extra.pop("features", False) else {}
    cfg = SelectConfig(scores=str(tmp_path / "s.parquet"), data=str(data), method=method, budget_tokens=0.3,
                       **({"by": "davir"} | features | extra))
    got = run_selection(cfg, tmp_path / "out")
    limit = int(0.3 * tokens.sum())
    used = tokens[table.set_index("id").index.get_indexer(got.selection["id"])].sum()
    assert used <= limit and "token budget" in got.note
    base = resolve(cfg)
    pick = METHODS[base.method].pick
    fits = [k for k in range(1, 41)
            if tokens[pick(table, x if features else None, replace(base, budget=k)).positions].sum() <= limit]
    assert len(got.selection) == max(fits) or method == "cluster"          # per-cluster quotas are not nested
    if method != "cluster":
        assert len(got.selection) + 1 not in fits


def test_a_token_budget_that_nothing_fits_is_an_error(tmp_path):
    data, x = _source(tmp_path, "s", 10, 1)
    table = pd.read_parquet(tmp_path / "s.parquet").assign(n_prompt=50, n_response=50)
    table.to_parquet(tmp_path / "s.parquet")
    with pytest.raises(ValueError, match="no example fits in 10 tokens"):
        run_selection(SelectConfig(scores=str(tmp_path / "s.parquet"), data=str(data), budget_tokens=10, by="davir"),
                      tmp_path / "o")
    with pytest.raises(ValueError, match="no score column 'lp_app'"):     # a wrong option is said, not taken for "too
        run_selection(SelectConfig(scores=str(tmp_path / "s.parquet"), data=str(data), budget_tokens=10),  # long"
                      tmp_path / "o")
    table.drop(columns=["n_prompt"]).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(ValueError, match="needs the n_prompt and n_response columns"):
        run_selection(SelectConfig(scores=str(tmp_path / "s.parquet"), data=str(data), budget_tokens=10), tmp_path / "o")


def test_random_selections_are_nested_across_budgets():
    from siftlm.select.sample import random_subset

    small, large = random_subset(50, 10, seed=4), random_subset(50, 30, seed=4)
    assert set(small) <= set(large) and len(set(large)) == 30


def test_a_token_budget_over_scores_with_gaps_keeps_what_can_be_ranked(tmp_path):
    data, _ = _source(tmp_path, "s", 10, 1)
    table = pd.read_parquet(tmp_path / "s.parquet").assign(n_prompt=5, n_response=5)
    table.loc[[2, 7], "davir"] = np.nan                                           # never selected, never a crash
    table.to_parquet(tmp_path / "s.parquet")
    got = run_selection(SelectConfig(scores=str(tmp_path / "s.parquet"), data=str(data), budget_tokens=1.0,
                                     by="davir"), tmp_path / "o")
    assert len(got.selection) == 8 and not set(got.selection["id"]) & set(table["id"].iloc[[2, 7]])


def test_a_token_budget_tries_another_count_only_when_a_count_cannot_be_selected(monkeypatch):
    """by_tokens skips a count whose pick raises CannotSelect; any other error (a bug in a method) propagates
    with its traceback instead of being taken for "this count does not fit"."""
    from siftlm.select import run
    from siftlm.select.picked import CannotSelect, Method, Picked

    table = pd.DataFrame({"id": [f"r{i}" for i in range(10)], "n_prompt": [1] * 10, "n_response": [9] * 10})

    def first(table, features, cfg, *, executor=None):
        if cfg.budget > 4:
            raise CannotSelect(f"budget {cfg.budget} exceeds the 4 examples with a finite score")
        return Picked(np.arange(cfg.budget), ["r"] * cfg.budget, np.zeros(cfg.budget))

    def broken(table, features, cfg, *, executor=None):
        raise ValueError("a bug in the method")

    cfg = SelectConfig(method="topk", budget_tokens=1.0)
    monkeypatch.setitem(run.METHODS, "topk", Method(first))
    assert len(run.by_tokens(table, None, cfg).positions) == 4
    monkeypatch.setitem(run.METHODS, "topk", Method(broken))
    with pytest.raises(ValueError, match="a bug in the method"):
        run.by_tokens(table, None, cfg)


def test_every_method_answers_one_contract():
    from siftlm.select.picked import Method
    from siftlm.select.run import METHODS

    cfg = SelectConfig(method="dpp", by="davir", lam=0.5, dpp_dtype="auto")
    assert all(isinstance(m, Method) for m in METHODS.values())
    table = pd.DataFrame({"id": ["a", "b"], "davir": [0.1, 0.2]})
    assert METHODS["dpp"].settle(table, np.ones((2, 3)), cfg).dpp_dtype in ("float32", "float64")
    assert METHODS["topk"].ranks_by(cfg) and METHODS["dpp"].ranks_by(cfg) and not METHODS["random"].ranks_by(cfg)

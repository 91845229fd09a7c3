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
                                                                                        budget=0.1))
    got = resolve(SelectConfig(method="tokens_out+dpp", lam=0.9))
    assert (got.method, got.by, got.lam) == ("dpp", "tokens_out", 0.9)
    got = resolve(SelectConfig(method="dpp"))
    assert (got.method, got.by, got.lam, got.budget) == ("dpp", "davir", None, 0.1)
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
                                         features=str(tmp_path / "a.npy")), tmp_path / method)
        t = pd.read_parquet(tmp_path / method / "scores.parquet")
        assert str(t["rank"].dtype) == "Int64" and t["rank"].isna().sum() == 16
        assert t.loc[t["selected"], "rank"].sort_values().tolist() == [1, 2, 3, 4]
        by_rank = t[t["selected"]].sort_values("rank")["id"].tolist()
        assert by_rank == res.selection["id"].tolist() == [e.id for e in res.examples]

"""Selection toward a target set: LESS cosine, representation round-robin, DataInf, and S2L, against brute force."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.config import SelectConfig
from siftlm.select import s2l, targeted
from siftlm.select.s2l import balanced

runner = CliRunner()


def _table(n):
    return pd.DataFrame({"id": [f"e{i:02d}" for i in range(n)]})


def _write(tmp_path, name, x):
    pd.DataFrame({"id": [f"t{i}" for i in range(len(x))], "vector": list(x)}).to_parquet(tmp_path / name)
    return str(tmp_path / name)


def test_less_and_repr_against_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((30, 6)), rng.standard_normal((3, 6))
    target = _write(tmp_path, "t.parquet", t)
    cos = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in t] for a in x])
    for agg, want in (("max", cos.max(1)), ("mean", cos.mean(1))):
        p = targeted.pick_less(_table(30), x, SelectConfig(method="less", target=target, budget=5, aggregate=agg))
        assert p.positions.tolist() == np.argsort(-want)[:5].tolist()
    p = targeted.pick_repr(_table(30), x, SelectConfig(method="repr", target=target, budget=7))
    taken = []
    while len(taken) < 7:                                         # round-robin, by hand
        for j in range(3):
            if len(taken) < 7:
                taken.append(next(i for i in np.argsort(-cos[:, j]) if i not in taken))
    assert p.positions.tolist() == taken


def test_balanced_sampling_takes_small_clusters_whole_and_sums_exactly():
    assert balanced([2, 10, 10], 12) == [2, 5, 5] and balanced([2, 10, 10], 13) == [2, 5, 6]
    assert balanced([1, 1, 50], 30) == [1, 1, 28] and sum(balanced([3, 7, 9, 4], 17)) == 17
    with pytest.raises(ValueError):
        balanced([2, 2], 5)


def test_s2l_clusters_loss_trajectories():
    rng = np.random.default_rng(1)
    slow = np.exp(np.c_[np.full(20, 3.0), np.full(20, 2.9), np.full(20, 2.8)] + 0.01 * rng.standard_normal((20, 3)))
    fast = np.exp(np.c_[np.full(10, 3.0), np.full(10, 1.0), np.full(10, 0.2)] + 0.01 * rng.standard_normal((10, 3)))
    t = pd.concat([_table(30), pd.DataFrame(np.r_[slow, fast], columns=["ppl_0", "ppl_1", "ppl_2"])], axis=1)
    p = s2l.pick(t, None, SelectConfig(method="s2l", budget=10, clusters=2, seed=0))
    assert len(p.positions) == 10 and sorted(np.bincount(p.columns["cluster"][p.positions]).tolist()) == [5, 5]


def test_datainf_and_less_through_the_cli_with_a_target_data_file(tmp_path, alpaca_file, model_dir):
    common = ["--model", str(model_dir), "--store", str(tmp_path / "st"), "--dim", "64", "--rank", "2",
              "--target-modules", "q_proj,v_proj"]
    res = runner.invoke(app, ["signals", str(alpaca_file), "--pass", "grads", "--keep-layers", *common,
                              "--out", str(tmp_path / "g.parquet")])
    assert res.exit_code == 0, res.output
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps({"instruction": f"Task {i}: alpha beta", "output": "gamma delta"}) + "\n"
                           for i in range(3)))
    ids = pd.read_parquet(tmp_path / "g.parquet")["id"]
    pd.DataFrame({"id": ids}).to_parquet(tmp_path / "s.parquet")
    for method in ("less", "datainf"):
        res = runner.invoke(app, ["select", str(tmp_path / "s.parquet"), "--data", str(alpaca_file), "--method", method,
                                  "--features", str(tmp_path / "g.parquet"), "--target", str(val), "--budget", "5",
                                  "--store", str(tmp_path / "st"), "--out", str(tmp_path / method)], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert len(pd.read_parquet(tmp_path / method / "selection.parquet")) == 5
    tgt = pd.read_parquet(tmp_path / "datainf" / "target-grads.parquet")              # computed like the features
    assert len(tgt) == 3 and len(tgt["vector"][0]) == 64 and "layer_grads" in tgt

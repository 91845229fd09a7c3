"""`siftlm experiment` on a tiny model: every cell, per-item results, the two-level comparison with random recomputed
by hand, the pool (held-out split, injected labels kept from scoring), caching from the results files, resume."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from siftlm.cli import app
from siftlm.config import SignalConfig
from siftlm.evaluate.sets import as_dataset, load_eval_set
from siftlm.models.load import load_model
from siftlm.recipes import experiment, pool
from siftlm.signals.losses import loss_pass
from siftlm.signals.prepare import prepare
from siftlm.stats import two_level_difference
from siftlm.train import sft
from tests.conftest import alpaca_rows

runner = CliRunner()


@pytest.fixture
def grid(tmp_path, alpaca_file, model_dir):
    from siftlm.data import read_dataset

    ids = [e.id for e in read_dataset(alpaca_file).examples]
    rng = np.random.default_rng(0)
    pd.DataFrame({"id": ids, "davir": rng.random(len(ids)), "n_prompt": 10, "n_response": np.arange(len(ids)) + 1}
                 ).to_parquet(tmp_path / "scores.parquet")
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(8, seed=9)))
    (tmp_path / "grid.yaml").write_text(f"""
data: {alpaca_file}
scores: scores.parquet
model: {model_dir}
methods: [random, "highest:davir", full]
budgets: [0.25]
budget_tokens: [60]
seeds: [0, 1]
random_subsets: 3
eval: eval.jsonl
n_boot: 200
out: exp
signals: {{store: {tmp_path / 'st'}}}
train: {{epochs: 1, lr: 0.005, token_budget: 512}}
""")
    return tmp_path / "grid.yaml"


def test_experiment_runs_every_cell_and_compares_with_random(grid, tmp_path, monkeypatch, model_dir):
    res = runner.invoke(app, ["experiment", str(grid)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "exp"
    cells = pd.read_parquet(out / "cells.parquet")
    items = pd.read_parquet(out / "results.parquet")
    trained = cells[cells["method"] != "base model"]
    assert len(trained) == 3 * 2 + 2 * 2 + 2                              # random 3 subsets x 2 units, davir 2 x 2, full 2
    assert set(trained.loc[(trained["method"] == "highest:davir") & (trained["unit"] == "examples"), "selected"]) == {6}
    tok = trained[trained["unit"] == "tokens"]
    assert (tok["selected"] > 0).all() and (tok["ids"].map(len) == tok["selected"]).all()
    # the comparison is recomputed from the per-item file by the two-level bootstrap, and its verdict follows the CI
    wide = items.pivot_table(index="key", columns="id", values="loss")
    key = lambda m, u: cells.loc[(cells["method"] == m) & (cells["unit"] == u), "key"]      # noqa: E731
    want = two_level_difference(wide.loc[key("highest:davir", "examples")].to_numpy(),
                                wide.loc[key("random", "examples")].to_numpy(), n_boot=200, seed=0)
    summary = json.loads((out / "results.json").read_text())
    per_item = summary["sets"]["eval"]["loss_per_item"]
    row = next(r for r in per_item["rows"] if r["method"] == "highest:davir" and r["unit"] == "examples")
    got = row["vs_random"][0]
    assert got["diff"] == pytest.approx(want["diff"], abs=1e-12) and got["low"] == pytest.approx(want["low"])
    assert got["verdict"] == ("better" if got["high"] < 0 else "worse" if got["low"] > 0 else "no difference detected")
    assert row["seeds"] == 2 and len(row["per_seed"]) == 2
    # the primary endpoint (undeclared here: the default) is the loss per token: summed NLL / summed tokens
    assert summary["primary"] == {"metric": "loss_per_token", "sets": ["eval"], "why": "", "declared": False}
    primary = summary["tables"][0]
    assert primary["primary"] and primary["metric"] == "loss_per_token"
    tokens = items.pivot_table(index="key", columns="id", values="n_tokens").iloc[0].to_numpy()
    want_tok = two_level_difference(wide.loc[key("highest:davir", "examples")].to_numpy(),
                                    wide.loc[key("random", "examples")].to_numpy(), n_boot=200, seed=0, weights=tokens)
    row = next(r for r in primary["rows"] if r["method"] == "highest:davir" and r["unit"] == "examples")
    assert row["vs_random"][0]["diff"] == pytest.approx(want_tok["diff"], abs=1e-12)
    nll = (wide * items.pivot_table(index="key", columns="id", values="n_tokens")).sum(axis=1) / tokens.sum()
    assert row["value"] == pytest.approx(nll.loc[key("highest:davir", "examples")].mean())
    # what each cell trained on: prompt + response tokens add up, and the steps are the batches of every epoch
    assert (trained["prompt_tokens"] + trained["response_tokens"] == trained["train_tokens"]).all()
    assert (trained["steps"] >= 1).all() and row["steps"] > 0
    # BH q-values over every comparison of the grid
    vs = [v for t in summary["tables"] for r in t["rows"] for v in r["vs_random"]]
    assert summary["comparisons"] == len(vs) and all(v["q"] >= v["p"] - 1e-12 for v in vs)
    assert "| highest:davir | 0.25 |" in (out / "results.md").read_text()
    # each cell is evaluated with its own trained model: recomputed here without the store, and unlike the base's
    cell = out / "cells" / "highest-davir-b0.25-s0"
    ev = as_dataset(load_eval_set(str(tmp_path / "eval.jsonl")), "eval")
    direct = {}
    for name, spec in (("trained", cell / "model" / "final"), ("base", model_dir)):
        lm = load_model(str(spec), quiet=True)
        prep = prepare(ev, lm.tokenizer, SignalConfig(progress=False))
        direct[name] = loss_pass(lm.model, prep.encoded, pad_id=lm.tokenizer.pad_token_id)["loss"]
    stored = items[items["key"] == key("highest:davir", "examples").iloc[0]]["loss"].to_numpy()
    np.testing.assert_allclose(stored, direct["trained"], atol=1e-5)
    assert np.abs(stored - direct["base"]).max() > 1e-3
    # a rerun, even with the cell folders gone (a fresh clone with the committed results), trains nothing
    import shutil

    shutil.rmtree(out / "cells")
    monkeypatch.setattr(sft, "train", lambda *a, **k: pytest.fail("a finished cell ran again"))
    monkeypatch.setattr(experiment, "finetune", lambda *a, **k: pytest.fail("a finished cell ran again"))
    before = (out / "results.md").read_text()
    wall = json.loads((out / "results.json").read_text())["wall_s"]
    assert runner.invoke(app, ["experiment", str(grid)]).exit_code == 0
    assert (out / "results.md").read_text() == before
    (out / "results.json").unlink()                       # the tables are outputs, never read back as state
    assert runner.invoke(app, ["experiment", str(grid), "--tables-only"]).exit_code == 0
    # recomputing the tables keeps the wall time of the runs that trained the cells: one ledger line per such run
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 1 and json.loads((out / "results.json").read_text())["wall_s"] == wall == runs[0]["wall_s"]
    # cells the grid no longer names (seed 1 of davir x 2 units and of full) stay in the files, left out of the
    # tables, said in one line
    grid.write_text(grid.read_text().replace("seeds: [0, 1]", "seeds: [0]"))
    res = runner.invoke(app, ["experiment", str(grid), "--tables-only"])
    assert res.exit_code == 0 and "3 cell(s) of another design" in " ".join(res.output.split())
    assert len(pd.read_parquet(out / "cells.parquet")) == len(cells)


def killed_at(name: str, call: int) -> str:
    """A script that runs the grid in argv[1] and kills itself (SIGKILL) at the ``call``-th call of
    ``experiment.<name>``."""
    return f"""
import os, signal, sys
from siftlm.recipes import experiment
real, n = experiment.{name}, [0]
def dying(*a, **k):
    n[0] += 1
    if n[0] == {call}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
experiment.{name} = dying
experiment.run_experiment(experiment.load_grid(sys.argv[1]))
"""


KILLED = killed_at("finetune", 4)          # killed inside the fourth cell's fine-tune


def test_kill_9_mid_experiment_redoes_only_the_cell_in_progress(grid, tmp_path, monkeypatch):
    from tests.conftest import run_killed

    run_killed(tmp_path, KILLED, grid)
    assert len(pd.read_parquet(tmp_path / "exp" / "cells.parquet")) == 1 + 3          # the base model and 3 cells
    real, calls = experiment.finetune, []
    monkeypatch.setattr(experiment, "finetune", lambda *a, **k: calls.append(1) or real(*a, **k))
    experiment.run_experiment(experiment.load_grid(grid))
    assert len(calls) == 12 - 3                                            # the 3 finished cells were not redone


KILLED_SAVING = killed_at("_save", 3)    # the second cell is done in its folder; killed before the tables have it


def test_kill_9_between_a_cells_folder_and_the_tables_redoes_nothing_it_finished(grid, tmp_path, monkeypatch):
    from tests.conftest import run_killed

    run_killed(tmp_path, KILLED_SAVING, grid)
    assert len(pd.read_parquet(tmp_path / "exp" / "cells.parquet")) == 1 + 1          # the base model and 1 cell
    done = sorted(p.parent.name for p in (tmp_path / "exp" / "cells").glob("*/eval-*.done"))
    assert len(done) == 2                  # each cell's folder is marked done once its row and results are in it
    real, calls = experiment.finetune, []
    monkeypatch.setattr(experiment, "finetune", lambda *a, **k: calls.append(1) or real(*a, **k))
    experiment.run_experiment(experiment.load_grid(grid))
    assert len(calls) == 12 - 2                                            # neither finished cell was redone
    cells = pd.read_parquet(tmp_path / "exp" / "cells.parquet")
    assert len(cells) == 13 and len(set(cells["key"])) == 13


def test_a_cell_folder_of_another_design_is_refused(grid, tmp_path):
    from siftlm.keyed import KeyMismatch

    experiment.run_experiment(experiment.load_grid(grid))
    changed = grid.read_text().replace("lr: 0.005", "lr: 0.002")
    grid.write_text(changed)
    with pytest.raises(KeyMismatch, match=r"holds an experiment cell with reference.lr 0.005 \(now 0.002\); train.lr"):
        experiment.run_experiment(experiment.load_grid(grid))


def test_a_pool_with_heldout_split_and_injected_noise(tmp_path, model_dir, monkeypatch):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(40)))
    (tmp_path / "grid.yaml").write_text(f"""
data: data.jsonl
model: {model_dir}
pool: {{size: 30, heldout: 8, seed: 0}}
inject: {{rate: 0.2, kinds: [swap, truncate, repeat]}}
methods: [random, "highest:davir", repr]
budgets: [0.3]
seeds: [0]
random_subsets: 2
finetune: false
eval: heldout
out: exp
signals: {{store: st, max_length: 256}}
train: {{epochs: 2, lr: 0.005, token_budget: 512}}
""")
    cfg = experiment.load_grid(tmp_path / "grid.yaml")
    real_labels = pool.Pool.labels

    def hidden(self):                           # scoring and selection must never read the labels
        raise AssertionError("labels read outside the analysis")
    monkeypatch.setattr(pool.Pool, "labels", hidden)
    p = pool.build_pool(cfg, tmp_path / "exp" / "pool")
    pool.score_pool(cfg, p)
    summary = json.loads((p.folder / "scores" / "summary.json").read_text())
    steps = summary["timings_s"]                # where the scoring's time went, step by step
    assert {"grads + base loss + lm-embed pass", "lm-embed pass", "embed pass", "base loss pass",
            "unconditional pass (IFD)", "reference fine-tune + trajectory"} <= set(steps)
    # one forward gave the base loss and lm-embed: both then served by the store, nothing else was
    assert sorted(summary["cached"]) == ["base loss pass", "lm-embed pass"]
    assert steps["total"] == pytest.approx(sum(v for k, v in steps.items() if k != "total"), abs=0.05)
    memory = summary["memory"]                  # how far each step raised the peak, and the peak itself
    assert set(memory["raised_by_step_gb"]) == set(steps) - {"total"}
    assert 0 <= sum(memory["raised_by_step_gb"].values()) <= memory["peak_rss_gb"]
    rows = [json.loads(line) for line in p.data.read_text().splitlines()]
    held = [json.loads(line) for line in p.heldout.read_text().splitlines()]
    assert len(rows) == 30 and len(held) == 8 and all(set(r) == {"id", "messages"} for r in rows)
    assert not {json.dumps(r["messages"]) for r in held} & {json.dumps(r["messages"]) for r in rows}
    labels = pd.read_parquet(p.folder / "labels.parquet")
    assert (labels["kind"] != "clean").sum() == 6 and set(labels["kind"]) == {"clean", "swap", "truncate", "repeat"}
    again = pool.build_pool(cfg, tmp_path / "again")
    assert again.fingerprint == p.fingerprint and again.data.read_bytes() == p.data.read_bytes()
    monkeypatch.setattr(pool.Pool, "labels", real_labels)
    experiment.run_experiment(cfg)
    noise = json.loads((tmp_path / "exp" / "results.json").read_text())["noise"]
    assert noise["pool_rate"] == pytest.approx(0.2) and "davir" in noise["auroc_scores"]
    scores = pd.read_parquet(p.scores).merge(labels, on="id")
    from sklearn.metrics import roc_auc_score

    want = roc_auc_score(scores["kind"] == "clean", scores["tokens_out"])          # high is kept
    assert noise["auroc_scores"]["tokens_out"]["all"] == pytest.approx(want)
    shares = {(r["method"], r["seed"]): r["corrupted_share"] for r in noise["selection_rows"]}
    assert set(shares) == {("random", 0), ("random", 1), ("highest:davir", 0), ("repr", 0)}
    # scores under the same key are kept (a fresh clone of committed results): only a missing feature file is made
    from dataclasses import replace

    assert pool.scored(cfg, p)
    before, embed = p.scores.read_bytes(), p.features("embed").read_bytes()
    p.features("embed").unlink()

    def no_scoring(*a, **k):
        raise AssertionError("scored again")
    monkeypatch.setattr(pool, "score_dataset", no_scoring)
    experiment.run_experiment(cfg)
    assert p.scores.read_bytes() == before and p.features("embed").read_bytes() == embed
    # scores made with other settings are refused before any work, naming what differs (one rule: siftlm.keyed)
    import re

    from siftlm.errors import KeyMismatch

    for changed, what in ((replace(cfg, train=replace(cfg.train, lr=0.001)), "reference.lr 0.005 (now 0.001)"),
                          (replace(cfg, crossfit=True), "crossfit false (now true)"),
                          (replace(cfg, signals=replace(cfg.signals, max_length=128)), "signals.max_length 256 (now 128)")):
        with pytest.raises(KeyMismatch, match=re.escape(what)):
            pool.scored(changed, p)
        with pytest.raises(KeyMismatch, match=re.escape(what)):
            pool.score_pool(changed, p)
    assert pool.scored(replace(cfg, methods=["random"], budgets=[0.5]), p)     # the grid, not the scoring, changed
    # --tables-only keeps the noise analysis only when it was made from these scores and cells
    saved = tmp_path / "exp" / "noise.json"
    made = json.loads(saved.read_text())
    assert made["identity"] == experiment.noise_identity(p, pd.DataFrame({"key": []}))     # no cell trained here

    def analysed(*a, **k):
        raise AssertionError("analysed again")
    monkeypatch.setattr(experiment.noisy, "analyse", analysed)
    experiment.run_experiment(cfg, tables_only=True)
    assert json.loads(saved.read_text()) == made
    saved.write_text(json.dumps({**made, "identity": {**made["identity"], "cells": ["another cell"]}}))
    with pytest.raises(AssertionError, match="analysed again"):      # other cells: never the stale analysis
        experiment.run_experiment(cfg, tables_only=True)
    saved.write_text(json.dumps({k: v for k, v in made.items() if k != "identity"}))
    with pytest.raises(AssertionError, match="analysed again"):      # written before identities: analysed again
        experiment.run_experiment(cfg, tables_only=True)


def test_grid_files_are_checked(tmp_path):
    (tmp_path / "g.yaml").write_text("methds: [random]\n")
    res = runner.invoke(app, ["experiment", str(tmp_path / "g.yaml")])
    assert res.exit_code == 1 and "unknown key 'methds' (did you mean 'methods'?)" in res.stderr


def test_a_behaviour_grid_with_filter_oracle_response_tokens_and_a_declared_primary(tmp_path, model_dir):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(40)))
    (tmp_path / "grid.yaml").write_text(f"""
data: data.jsonl
model: {model_dir}
pool: {{size: 30, heldout: 8, seed: 0}}
inject: {{rate: 0.3, kinds: [refusal, refusal, repeat, swap]}}
methods: [random, filter, oracle]
budgets: [0.5]
budget_tokens: [0.3]
budget_on: response
seeds: [0]
random_subsets: 2
eval: heldout
behaviour: {{max_new_tokens: 4}}
primary: {{metric: refusal, sets: [heldout], why: "the test's endpoint"}}
n_boot: 200
out: exp
signals: {{store: st, max_length: 256}}
train: {{epochs: 1, lr: 0.005, token_budget: 512}}
""")
    cfg = experiment.load_grid(tmp_path / "grid.yaml")
    experiment.run_experiment(cfg)
    out = tmp_path / "exp"
    cells = pd.read_parquet(out / "cells.parquet")
    items = pd.read_parquet(out / "results.parquet")
    labels = pd.read_parquet(out / "pool" / "labels.parquet")
    junk = set(labels.loc[labels["kind"] != "clean", "id"])
    ex = cells[cells["unit"] == "examples"]
    assert set(ex["selected"]) == {15}                                 # every arm keeps half of all 30 rows
    for ids in cells.loc[cells["method"] == "oracle", "ids"]:
        assert not set(ids) & junk                                     # the oracle never keeps labelled junk
    flagged = pd.read_parquet(out / "cells" / "filter-b0.5-s0" / "selection" / "scores.parquet")
    flagged = set(flagged.loc[flagged["detected"] != "", "id"])
    assert flagged and all(not set(ids) & flagged for ids in cells.loc[cells["method"] == "filter", "ids"])
    assert set(labels.loc[labels["kind"] == "refusal", "id"]) <= flagged     # every injected refusal is caught
    # a budget of response tokens: each selection's response tokens fit in 30 % of the pool's
    scores = pd.read_parquet(out / "pool" / "scores" / "scores.parquet")
    limit = int(0.3 * scores["n_response"].sum())
    resp = cells[cells["unit"] == "response"]
    assert len(resp) == 4 and (resp["response_tokens"] <= limit).all() and (resp["response_tokens"] > 0.5 * limit).all()
    # every cell and the base model answered every item; the primary table is the declared one, recomputed by hand
    assert items["generation"].notna().all() and set(items["key"]) == set(cells["key"])
    summary = json.loads((out / "results.json").read_text())
    assert summary["primary"]["metric"] == "refusal" and summary["primary"]["declared"]
    primary = summary["tables"][0]
    assert primary["primary"] and primary["metric"] == "refusal" and primary["sets"] == ["heldout"]
    wide = items.pivot_table(index="key", columns="id", values="refusal")
    key = lambda m, u: cells.loc[(cells["method"] == m) & (cells["unit"] == u), "key"]      # noqa: E731
    want = two_level_difference(wide.loc[key("oracle", "examples")].to_numpy(),
                                wide.loc[key("random", "examples")].to_numpy(), n_boot=200, seed=0)
    row = next(r for r in primary["rows"] if r["method"] == "oracle" and r["unit"] == "examples")
    assert row["vs_random"][0]["diff"] == pytest.approx(want["diff"], abs=1e-12)
    assert {t["metric"] for t in summary["tables"]} >= {"loss_per_token", "loss_per_item", "wrong_language",
                                                        "prop_refusal", "prop_foreign"}
    md = (out / "results.md").read_text()
    assert "**Primary endpoint: refusal rate on heldout** (named in the grid's config before it ran)" in md
    # a changed behaviour setting re-evaluates (a new set key)
    from dataclasses import replace

    changed = replace(cfg, behaviour=replace(cfg.behaviour, max_new_tokens=5))
    sets_now = experiment.eval_sets(cfg, pool.build_pool(cfg, out / "pool"))
    sets_changed = experiment.eval_sets(changed, pool.build_pool(cfg, out / "pool"))
    assert sets_now["heldout"][0] != sets_changed["heldout"][0]


def test_a_targeted_grid_on_a_mixed_pool_with_a_held_out_minority_target(tmp_path, model_dir):
    """Sources mixed into one pool, the target source's query and evaluation sets held out of it and disjoint by
    content, the query set's features made like the pool's (and remade when it changes), a targeted selection that
    follows the query features, and each selection's share of every source."""
    rows_a = alpaca_rows(40, seed=1)
    rows_b = [{"instruction": f"Poem {k}: write about the sea and ships number {k}.", "input": "",
               "output": f"Waves and sails, verse {k}."} for k in range(30)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_a))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_b))
    (tmp_path / "grid.yaml").write_text(f"""
model: {model_dir}
pool: {{seed: 0, sources: [{{data: a.jsonl, size: 24}}, {{data: b.jsonl, size: 6, name: poems}}]}}
target: {{data: "source:poems", query: 4, eval: 8}}
methods: [random, {{name: "repr->query", method: repr, target: query}}]
budgets: [0.2]
seeds: [0]
random_subsets: 2
eval: target
n_boot: 100
out: exp
signals: {{store: st, max_length: 256}}
train: {{epochs: 1, lr: 0.005, token_budget: 512}}
""")
    cfg = experiment.load_grid(tmp_path / "grid.yaml")
    experiment.run_experiment(cfg)
    folder = tmp_path / "exp" / "pool"
    labels = pd.read_parquet(folder / "labels.parquet")
    assert labels["source"].value_counts().to_dict() == {"a": 24, "poems": 6}
    read = lambda name: [json.loads(line) for line in (folder / name).read_text().splitlines()]       # noqa: E731
    query, ev, pool_rows = read("target-query.jsonl"), read("target-eval.jsonl"), read("pool.jsonl")
    first = lambda rows: {r["messages"][0]["content"] for r in rows}                                   # noqa: E731
    assert len(query) == 4 and len(ev) == 8 and not first(query) & first(ev)
    assert not (first(query) | first(ev)) & first(pool_rows)       # held out of the pool before it was drawn
    assert all(r["messages"][0]["content"].startswith("Poem") for r in query + ev)
    # the targeted selection's first pick is the pool row nearest (cosine of lm-embed features) to query item 0
    from siftlm.signals.table import features_meta, load_features
    from siftlm.stats import l2_normalize

    ids = pd.read_parquet(folder / "scores" / "scores.parquet")["id"].tolist()
    x = l2_normalize(load_features(folder / "features-lm-embed.parquet", ids))
    t = l2_normalize(load_features(folder / "target-features-lm-embed.parquet"))
    sel = pd.read_parquet(tmp_path / "exp" / "cells" / "repr--query-b0.2-s0" / "selection" / "selection.parquet")
    assert sel["id"].iloc[0] == ids[int(np.argmax(x @ t[0]))]
    assert features_meta(folder / "target-features-lm-embed.parquet")["query"] == experiment.target.fingerprint(folder)
    summary = json.loads((tmp_path / "exp" / "results.json").read_text())
    shares = {r["method"]: r for r in summary["source_shares"]}
    assert shares["pool"]["share:poems"] == pytest.approx(0.2)
    assert shares["repr->query"]["share:poems"] + shares["repr->query"]["share:a"] == pytest.approx(1.0)
    assert summary["primary"]["sets"] == ["target"] and summary["tables"][0]["items"] == 8
    costs = json.loads((folder / "feature-costs.json").read_text())       # what the targeted method's features cost
    assert {"lm-embed pass", "target lm-embed pass"} <= set(costs)
    assert all(c["seconds"] >= 0 and c["process_peak_rss_gb"] > 0 for c in costs.values())


def test_a_method_with_scores_of_its_own_selects_by_them_and_is_keyed_by_their_bytes(grid, tmp_path):
    """Another model's scores for the same pool (the self-selection arm of a small-selects-for-large grid): the
    method picks by them, and changing their bytes changes the cell's key."""
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    other = scores.assign(davir=-scores["davir"])                 # the opposite ranking
    other.to_parquet(tmp_path / "other.parquet")
    text = grid.read_text().replace('methods: [random, "highest:davir", full]',
                                    'methods: [{name: other, method: topk, by: davir, scores: other.parquet}]')
    text = text.replace("budget_tokens: [60]", "budget_tokens: []").replace("seeds: [0, 1]", "seeds: [0]")
    grid.write_text(text)
    cfg = experiment.load_grid(grid)
    experiment.run_experiment(cfg)
    cells = pd.read_parquet(tmp_path / "exp" / "cells.parquet")
    ids = cells.loc[cells["method"] == "other", "ids"].iloc[0]
    assert list(ids) == other.sort_values(["davir", "id"], ascending=[False, True])["id"].head(6).tolist()
    cell = experiment.cells(cfg)[0]
    key = experiment.cell_key(cfg, cell, "src")
    other.assign(davir=scores["davir"]).to_parquet(tmp_path / "other.parquet")
    assert experiment.cell_key(cfg, cell, "src") != key


def test_a_grid_that_only_scores_its_pool_writes_empty_tables(tmp_path, model_dir):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(30)))
    (tmp_path / "grid.yaml").write_text(f"""
data: data.jsonl
model: {model_dir}
pool: {{size: 20, heldout: 6, seed: 0}}
grad_norm: false
finetune: false
methods: [random]
eval: heldout
out: exp
signals: {{store: st, max_length: 256}}
train: {{epochs: 2, lr: 0.005, token_budget: 512}}
""")
    cfg = experiment.load_grid(tmp_path / "grid.yaml")
    experiment.run_experiment(cfg)
    summary = json.loads((tmp_path / "exp" / "pool" / "scores" / "summary.json").read_text())
    assert not any(k.startswith("grads") for k in summary["timings_s"])
    assert "lp_app" in pd.read_parquet(tmp_path / "exp" / "pool" / "scores" / "scores.parquet")
    assert json.loads((tmp_path / "exp" / "results.json").read_text())["tables"] == []
    assert "No fine-tuned cells" in (tmp_path / "exp" / "results.md").read_text()     # no primary endpoint of nothing


def test_seeds_for_cuts_an_arm_without_changing_the_other_cells_keys(grid):
    """A grid cut to fit the time (seeds_for) runs fewer seeds of the named arms; every cell it keeps has the key it
    had in the full grid, so the cells already run are reused and the rest can be run later."""
    full = experiment.load_grid(grid)
    cut_text = grid.read_text() + "\nseeds_for: {full: [1], 'highest:davir': [0]}\n"
    grid.write_text(cut_text)
    cut = experiment.load_grid(grid)
    named = {(c.name, c.budget, c.unit, c.seed) for c in experiment.cells(cut)}
    assert {(c.name, c.seed) for c in experiment.cells(cut) if c.name in ("full", "highest:davir")} == \
        {("full", 1), ("highest:davir", 0)}
    assert [c for c in experiment.cells(cut) if c.name == "random"] == \
        [c for c in experiment.cells(full) if c.name == "random"]
    keys = {(c.name, c.budget, c.unit, c.seed): experiment.cell_key(full, c, "src") for c in experiment.cells(full)}
    assert {k: keys[k] for k in named} == {(c.name, c.budget, c.unit, c.seed): experiment.cell_key(cut, c, "src")
                                            for c in experiment.cells(cut)}
    grid.write_text(cut_text.replace("seeds_for: {full", "seeds_for: {fulll"))
    with pytest.raises(Exception, match="seeds_for names no method"):
        experiment.load_grid(grid)                 # refused when the grid is read, before any work
    only_random = cut_text.replace('methods: [random, "highest:davir", full]', "methods: [random]")
    grid.write_text(only_random.replace("'highest:davir': [0]", "'highest:davir': []"))
    with pytest.raises(Exception, match=r"seeds_for names no method of the grid: \['full', 'highest:davir'\]"):
        experiment.load_grid(grid)

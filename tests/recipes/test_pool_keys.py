"""A pool's scores and feature files are keyed by the pool they were made from: a changed pool (same folder, same
ids pool-0000N, other examples) never reuses stale features or scores."""

import json

import numpy as np
import pandas as pd
import pytest

from siftlm.data import read_dataset
from siftlm.errors import KeyMismatch
from siftlm.models.load import load_model
from siftlm.recipes import experiment
from siftlm.recipes import pool as pools
from siftlm.signals.embed import lm_embed_pass
from siftlm.signals.prepare import prepare
from tests.conftest import alpaca_rows


def _grid(tmp_path, model_dir, seed: int):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(30, seed=seed)))
    (tmp_path / "grid.yaml").write_text(f"""
data: data.jsonl
model: {model_dir}
pool: {{size: 12, heldout: 4, seed: 0}}
methods: [random, repr]
budgets: [0.5]
finetune: false
grad_norm: false
eval: heldout
out: exp
signals: {{store: st, max_length: 256, progress: false}}
train: {{epochs: 2, lr: 0.005, token_budget: 512}}
""")
    cfg = experiment.load_grid(tmp_path / "grid.yaml")
    return cfg, pools.build_pool(cfg, tmp_path / "exp" / "pool")


def _lm_embed(cfg, pool, model_dir) -> np.ndarray:
    lm = load_model(str(model_dir), dtype="float32", quiet=True)
    prep = prepare(read_dataset(pool.data), lm.tokenizer, cfg.signals)
    return np.stack(lm_embed_pass(lm.model, prep.encoded, pad_id=lm.tokenizer.pad_token_id)["vector"])


def _features(pool, name) -> np.ndarray:
    return np.stack(pd.read_parquet(pool.features(name))["vector"].to_list())


def test_a_changed_pool_never_reuses_stale_features(tmp_path, model_dir):
    cfg, old = _grid(tmp_path, model_dir, seed=0)
    pools.feature_passes(cfg, old, ["lm-embed"])
    np.testing.assert_allclose(_features(old, "lm-embed"), _lm_embed(cfg, old, model_dir), atol=1e-5)
    cfg, new = _grid(tmp_path, model_dir, seed=7)            # other data: the same folder and ids, other examples
    assert new.fingerprint != old.fingerprint and new.folder == old.folder
    pools.feature_passes(cfg, new, ["lm-embed"])
    np.testing.assert_allclose(_features(new, "lm-embed"), _lm_embed(cfg, new, model_dir), atol=1e-5)


def test_grads_and_lm_embed_feature_files_come_from_one_forward(tmp_path, model_dir):
    cfg, pool = _grid(tmp_path, model_dir, seed=0)
    timer = pools.Timer()
    pools.feature_passes(cfg, pool, ["grads", "lm-embed"], timer=timer)
    assert "grads + lm-embed pass" in timer.times and timer.cached == ["lm-embed pass"]   # served by that forward
    np.testing.assert_allclose(_features(pool, "lm-embed"), _lm_embed(cfg, pool, model_dir), atol=1e-5)
    assert len(_features(pool, "grads")) == len(_features(pool, "lm-embed")) == 12


def test_a_changed_pool_never_reuses_stale_scores(tmp_path, model_dir, monkeypatch):
    cfg, old = _grid(tmp_path, model_dir, seed=0)
    pools.score_pool(cfg, old, features=())
    before = old.scores.read_bytes()
    cfg, new = _grid(tmp_path, model_dir, seed=7)
    monkeypatch.setattr(pools, "run_pass", lambda *a, **k: pytest.fail("a pass ran before the mismatch was said"))
    with pytest.raises(KeyMismatch, match=r"scores.*another pool"):
        pools.score_pool(cfg, new, features=())
    assert new.scores.read_bytes() == before                 # refused before any work: nothing mixed or overwritten


def test_scores_written_before_they_were_keyed_are_kept_by_their_scoring_key(tmp_path, model_dir, monkeypatch):
    """A committed grid's pool/scores holds scores.parquet and summary.json (with its scoring_key) and nothing else:
    the same key keeps them (nothing is scored again), another is refused."""
    cfg, p = _grid(tmp_path, model_dir, seed=0)
    pools.score_pool(cfg, p, features=())
    folder = p.folder / "scores"
    for path in [folder / "siftlm-identity.json", *folder.glob("*.done")]:
        path.unlink()                                         # as the committed results are
    before = p.scores.read_bytes()
    monkeypatch.setattr(pools, "score_dataset", lambda *a, **k: pytest.fail("scored again"))
    assert pools.scored(cfg, p)
    pools.score_pool(cfg, p, features=())
    assert p.scores.read_bytes() == before and (folder / "scores.done").exists()
    for path in [folder / "siftlm-identity.json", *folder.glob("*.done")]:
        path.unlink()
    from dataclasses import replace

    with pytest.raises(KeyMismatch, match="holds pool scores of another pool or other scoring settings"):
        pools.score_pool(replace(cfg, crossfit=True), p, features=())


def test_scores_written_before_any_scoring_key_are_kept_for_the_tables_only(tmp_path, model_dir):
    """A pool scored before summary.json named a scoring_key (runs/results/calibration): not taken as this key's
    scores (a cell that needs them scores the pool again, keyed), yet kept for the tables of the cells it served."""
    cfg, p = _grid(tmp_path, model_dir, seed=0)
    pools.score_pool(cfg, p, features=())
    folder = p.folder / "scores"
    for path in [folder / "siftlm-identity.json", *folder.glob("*.done")]:
        path.unlink()
    summary = json.loads((folder / "summary.json").read_text())
    del summary["scoring_key"]
    (folder / "summary.json").write_text(json.dumps(summary))
    assert not pools.scored(cfg, p) and pools.unkeyed_scores(p)
    pools.score_pool(cfg, p, features=())                    # asked for: scored again, under its key
    assert pools.scored(cfg, p) and not pools.unkeyed_scores(p)

"""Sentence embeddings: the length-sorted batched pass against one text at a time, and the CLI pass into the store."""

import numpy as np
import pandas as pd
import pytest

from siftlm.data.formats import Example
from siftlm.signals.sentence import example_text, sentence_embed

st = pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def minilm():
    from siftlm.models.load import load_sentence_model

    return load_sentence_model("builtin:all-minilm-l6-v2", device="cpu").model


def test_example_text_parts():
    ex = Example("x", [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                       {"role": "assistant", "content": "A"}])
    assert example_text(ex, "full") == "S\n\nQ\n\nA"
    assert example_text(ex, "prompt") == "S\n\nQ"
    assert example_text(ex, "response") == "A"
    pair = Example("p", [{"role": "user", "content": "Q"}], chosen="good", rejected="bad")
    assert example_text(pair, "full") == "Q\n\ngood" and example_text(pair, "prompt") == "Q"


def test_batched_embeddings_equal_one_at_a_time(minilm):
    texts = ["short", "a much longer sentence about alpacas and their wool " * 3, "mid length text here", "x" * 40,
             "another one", "the quick brown fox jumps over the lazy dog"]
    seen = []
    got = sentence_embed(minilm, texts, batch_size=4, on_batch=seen.append)
    assert seen == [4, 2]
    for i, t in enumerate(texts):
        one = minilm.encode([t], normalize_embeddings=True, convert_to_numpy=True)[0]
        np.testing.assert_allclose(got[i], one, atol=2e-5)
    assert got.shape == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert float(got[2] @ got[4]) < 0.99                 # distinct texts, distinct vectors


def test_embed_pass_cli_writes_and_reuses_the_store(tmp_path, alpaca_file):
    from typer.testing import CliRunner

    from siftlm.cli import app

    args = ["signals", str(alpaca_file), "--pass", "embed", "--store", str(tmp_path / "st"), "--limit", "10",
            "--out", str(tmp_path / "emb.parquet")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(tmp_path / "emb.parquet")
    assert len(frame) == 10 and len(frame["vector"][0]) == 384
    (pass_dir,) = (tmp_path / "st").glob("embed-*")
    stamp = (pass_dir / "shard-00000.parquet").stat().st_mtime_ns
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (pass_dir / "shard-00000.parquet").stat().st_mtime_ns == stamp      # served from the store

"""Prepared data: every record accounted for, for SFT examples, pairs and plain texts."""

import json

import pytest

from siftlm.config import SignalConfig
from siftlm.data import read_dataset
from siftlm.signals.prepare import prepare, prepare_pairs, prepare_texts
from tests.conftest import alpaca_rows, pair_rows


def test_prepare_pairs_accounts_for_every_record(tmp_path, tokenizer):
    rows = pair_rows(5) + [{"prompt": "q", "chosen": "", "rejected": "b"}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prep = prepare_pairs(read_dataset(path), tokenizer, SignalConfig(limit=3, progress=False))
    c = prep.counts()
    assert c == {"read": 6, "kept": 3, "rejected": 1, "skipped": 0, "unused_by_limit": 2}


def test_prepare_sft_rejects_what_does_not_fit_and_counts_the_limit(tmp_path, tokenizer):
    rows = alpaca_rows(6) + [{"instruction": "long", "output": "z" * 300}, {"instruction": "x", "output": ""}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prep = prepare(read_dataset(path), tokenizer, SignalConfig(max_length=200, progress=False))
    assert prep.counts() == {"read": 8, "kept": 6, "rejected": 2, "skipped": 0, "unused_by_limit": 0}
    assert any("does not fit in max_length=200" in r.reason and r.line == 7 for r in prep.rejects)
    assert [len(e.input_ids) <= 200 for e in prep.encoded] == [True] * 6
    limited = prepare(read_dataset(path), tokenizer, SignalConfig(max_length=200, limit=4, progress=False))
    # the long one is past the limit
    assert limited.counts() == {"read": 8, "kept": 4, "rejected": 1, "skipped": 0, "unused_by_limit": 3}
    assert limited.fingerprint != prep.fingerprint and limited.ids == prep.ids[:4]


def test_prepare_refuses_pairs_for_sft_and_rejects_sft_records_among_pairs(tmp_path, tokenizer):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(3)))
    with pytest.raises(ValueError, match="holds preference pairs"):
        prepare(read_dataset(path), tokenizer, SignalConfig(progress=False))
    mixed = tmp_path / "m.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(3)) + json.dumps(
        {"prompt": "q", "completion": "a"}) + "\n")
    prep = prepare_pairs(read_dataset(mixed, format="preference"), tokenizer, SignalConfig(progress=False))
    assert prep.counts()["kept"] == 3 and prep.counts()["rejected"] == 1


def test_prepare_texts_keeps_every_valid_record(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(5)))
    prep = prepare_texts(read_dataset(path), SignalConfig(limit=3, progress=False), part="response")
    assert prep.kind == "text" and prep.encoded == [r["output"] for r in alpaca_rows(3)]
    assert prep.counts() == {"read": 5, "kept": 3, "rejected": 0, "skipped": 0, "unused_by_limit": 2}
    other = prepare_texts(read_dataset(path), SignalConfig(limit=3, progress=False), part="full")
    assert other.fingerprint != prep.fingerprint


def test_prompt_completion_data_is_scored_on_its_completion_and_loss_on_overrides(tmp_path, tokenizer):
    from siftlm.models.template import IGNORE

    row = {"prompt": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                      {"role": "user", "content": "q2"}], "completion": [{"role": "assistant", "content": "a2"}]}
    path = tmp_path / "pc.jsonl"
    path.write_text(json.dumps(row) + "\n")
    msgs_path = tmp_path / "m.jsonl"
    msgs_path.write_text(json.dumps({"messages": row["prompt"] + row["completion"]}) + "\n")

    def labelled(p, **kw):
        prep = prepare(read_dataset(p), tokenizer, SignalConfig(progress=False, **kw))
        e = prep.encoded[0]
        return tokenizer.decode([t for t in e.labels if t != IGNORE]), e.n_response

    assert labelled(path)[0] == "a2</s>"                                     # auto: the completion, as TRL trains it
    assert labelled(msgs_path)[0] == "a1</s>a2</s>"                          # auto: every assistant turn
    assert labelled(msgs_path, loss_on="completion")[0] == "a2</s>"
    text, n_all = labelled(msgs_path, loss_on="all")
    assert "q1" in text and "a2" in text and n_all > labelled(msgs_path)[1]


def test_plain_text_records_are_scored_whole_without_a_template(tmp_path, tokenizer):
    from siftlm.models.template import IGNORE

    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "hello world"}) + "\n")
    prep = prepare(read_dataset(path), tokenizer, SignalConfig(progress=False))
    e = prep.encoded[0]
    assert prep.template == "plain" and tokenizer.decode(e.input_ids) == "<s>hello world</s>"
    assert tokenizer.decode([t for t in e.labels if t != IGNORE]) == "hello world</s>" and e.n_prompt == 1


def test_the_dataset_fingerprint_is_the_one_cached_stores_are_keyed_by():
    """Every SFT dataset fingerprint (prepare, the uncond pass's key, a pool's subsets) is built by
    encoded_fingerprint; its value must stay what the three copies computed, or every cached store and committed
    result keyed by it would be orphaned. The constants were computed by the code before the helper existed."""
    from siftlm.models.template import Encoded
    from siftlm.signals.prepare import encoded_fingerprint
    from siftlm.signals.store import dataset_fingerprint

    enc = [Encoded("ex-1", [5, 6, 7, 8], [-100, -100, 7, 8], 2, 2), Encoded("ex-2", [9, 10, 11], [-100, 10, 11], 1, 2)]
    assert encoded_fingerprint(enc) == "1a98dcd4a8b06eab"
    assert encoded_fingerprint(enc, ["u1", "u2"]) == "92be0b8814e7078b"
    assert encoded_fingerprint(enc) == dataset_fingerprint([e.id for e in enc], [e.input_ids + e.labels for e in enc])

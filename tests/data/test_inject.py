"""Labelled corruptions: exact rates, the same pool for the same seed, each kind doing what it says."""

import numpy as np
import pytest

from siftlm.data import Example
from siftlm.data.inject import KINDS, REFUSALS, corrupted_count, exact_counts, inject, repeat, truncate
from tests.conftest import alpaca_rows


def _examples(n):
    return [Example(f"pool-{i:05d}", [{"role": "user", "content": r["instruction"]},
                                      {"role": "assistant", "content": r["output"] + " and more words here."}])
            for i, r in enumerate(alpaca_rows(n))]


def _answer(ex):
    return ex.messages[-1]["content"]


@pytest.mark.parametrize("n, rate", [(100, 0.2), (37, 0.2), (50, 0.13), (12, 0.5), (10, 0.0)])
def test_rates_are_exact_and_kinds_even(n, rate):
    exs = _examples(n)
    out, labels = inject(exs, rate, foreign=["外语回答。"], seed=3)
    bad = [k for k in labels if k is not None]
    assert len(bad) == corrupted_count(rate, n) == int(np.floor(rate * n + 0.5))
    counts = sorted((bad.count(k) for k in KINDS), reverse=True)
    assert counts == exact_counts(len(bad), len(KINDS)) and max(counts) - min(counts) <= (1 if bad else 0)
    assert [e.id for e in out] == [e.id for e in exs]                      # neutral ids, same order
    for e, k, orig in zip(out, labels, exs, strict=True):
        assert (e.messages == orig.messages) == (k is None)               # clean rows untouched, corrupted changed
        assert e.raw == {} or k is None


def test_same_seed_same_pool_other_seed_other_pool():
    a = inject(_examples(60), 0.2, foreign=["外语"], seed=0)
    b = inject(_examples(60), 0.2, foreign=["外语"], seed=0)
    c = inject(_examples(60), 0.2, foreign=["外语"], seed=1)
    assert [e.messages for e in a[0]] == [e.messages for e in b[0]] and a[1] == b[1]
    assert a[1] != c[1]


def test_each_kind_does_what_it_says():
    exs = _examples(60)
    answers = {_answer(e) for e in exs}
    out, labels = inject(exs, 0.5, foreign=["这是一个中文回答。"], seed=2)
    clean_answers = {_answer(e) for e, k in zip(exs, labels, strict=True) if k is None}
    for e, k, orig in zip(out, labels, exs, strict=True):
        new, old = _answer(e), _answer(orig)
        if k == "swap":
            assert new in clean_answers and new != old
        elif k == "truncate":
            assert old.startswith(new) and len(new.split()) < len(old.split()) and not new.endswith(".")
        elif k == "repeat":
            words = new.split()
            period = next(p for p in range(1, len(words) + 1) if words == (words[:p] * len(words))[: len(words)])
            assert len(words) // period >= 4 and len(words) >= len(old.split())
        elif k == "near_dup":
            twin = [a for a in clean_answers if a.lower().split() == new.lower().split()]
            assert twin and new not in answers                              # a near copy of a clean row, not exact
        elif k == "refusal":
            assert new in REFUSALS
        elif k == "foreign":
            assert new == "这是一个中文回答。"


def test_unknown_kind_and_missing_foreign_answers_are_errors():
    with pytest.raises(ValueError, match="unknown corruption kind"):
        inject(_examples(5), 0.2, kinds=["typo"])
    with pytest.raises(ValueError, match="foreign kind needs"):
        inject(_examples(5), 0.2)
    with pytest.raises(ValueError, match="rate must be in"):
        corrupted_count(1.5, 10)


def test_truncate_and_repeat_helpers():
    rng = np.random.default_rng(0)
    text = "One two three four five six seven eight nine ten."
    cut = truncate(text, rng)
    assert text.startswith(cut) and 3 <= len(cut.split()) <= 6
    assert repeat("a b", rng).split() == ["a", "b"] * 4


def test_every_corrupted_row_changes_even_when_the_answer_is_tiny():
    exs = [Example(f"p{i}", [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "4"}])
           for i in range(30)]
    out, labels = inject(exs, 0.5, kinds=["truncate", "repeat"], seed=0)
    assert all(o.messages != e.messages for o, e, k in zip(out, exs, labels, strict=True) if k)
    with pytest.raises(ValueError, match="at least one corruption kind"):
        inject(exs, 0.2, kinds=[])

"""A noisy pool: a copy of a dataset with labelled corruptions injected at a given rate (the noisy-pool benchmark).

Real instruction pools hold junk: answers to another question, answers cut off mid-sentence, degenerate
repetition, near-duplicate copies, boilerplate refusals and answers in another language. ``inject`` corrupts an
exact share of the rows with such junk, seeded, and returns the kind of each row separately from the data: the
corrupted examples keep neutral ids and nothing in them says what was done, so no score or selector can see the
label; only the benchmark's analysis reads it.

Kinds (each changes the last assistant turn unless said otherwise):

- ``swap``: the response of another (clean) example;
- ``truncate``: the response cut after 30-60 % of its words, mid-sentence (trailing punctuation removed);
- ``repeat``: the response's first words repeated until the answer is at least as long as it was (degenerate
  generation);
- ``near_dup``: the whole example replaced by a near copy of another clean example (one word's case and the
  spacing changed), so the pool holds two nearly identical rows;
- ``refusal``: a boilerplate refusal or assistant disclaimer instead of the answer;
- ``foreign``: an answer in another language (Chinese, from LLaMA-Factory's ``alpaca_zh_demo``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import numpy as np

from siftlm.data.formats import Example
from siftlm.errors import DataError, UsageError

SALT = 0x1ECC7ED    # salts the seed so no other seeded draw of siftlm (random selection, splits) repeats this one
KINDS = ("swap", "truncate", "repeat", "near_dup", "refusal", "foreign")

REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "As an AI language model, I am unable to provide an answer to this question.",
    "I apologize, but I cannot assist with that. Is there anything else I can help you with?",
    "I'm sorry, I don't have enough information to answer that.",
    "Thank you for your question! Unfortunately, I am not able to complete this task.",
)


def exact_counts(total: int, n: int) -> list[int]:
    """``total`` split over ``n`` kinds as evenly as possible (the first ``total % n`` get one more)."""
    return [total // n + (1 if k < total % n else 0) for k in range(n)]


def corrupted_count(rate: float, n: int) -> int:
    """How many of ``n`` rows a rate corrupts: round(rate * n), half up."""
    if not 0 <= rate < 1:
        raise UsageError(f"inject rate must be in [0, 1), got {rate}")
    return int(np.floor(rate * n + 0.5))


def _response(ex: Example) -> str:
    return next(m["content"] for m in reversed(ex.messages) if m["role"] == "assistant")


def _with_response(ex: Example, text: str) -> Example:
    out = copy.deepcopy(ex)
    for m in reversed(out.messages):
        if m["role"] == "assistant":
            m["content"] = text
            break
    return out


def truncate(text: str, rng: np.random.Generator) -> str:
    """The text cut after 30-60 % of its words, without a final full stop (at least one word is dropped); a
    one-word answer loses its second half, and one character becomes an ellipsis, so the row always changes."""
    words = text.split()
    if len(words) < 2:
        return text[: len(text) // 2] if len(text) > 1 else "..."
    keep = min(len(words) - 1, max(1, int(len(words) * rng.uniform(0.3, 0.6))))
    return re.sub(r"[.!?。！？;:,]+$", "", " ".join(words[:keep]))


def repeat(text: str, rng: np.random.Generator) -> str:
    """The first 3-8 words repeated until the answer has at least as many words as before (and at least 4 copies)."""
    words = text.split() or ["..."]
    k = max(1, min(len(words), int(rng.integers(3, 9))))
    copies = max(4, -(-len(words) // k))
    return " ".join(words[:k] * copies)


def near_copy(ex: Example, rng: np.random.Generator) -> Example:
    """A near duplicate of ``ex``: one word of the response changes case and a double space goes in."""
    text = _response(ex)
    words = text.split(" ")
    i = int(rng.integers(0, len(words)))
    w = words[i]
    words[i] = w.lower() if w[:1].isupper() else w.capitalize() if w else w
    changed = " ".join(words)
    if changed == text:
        changed = text + " "
    j = changed.find(" ")
    changed = changed[:j] + " " + changed[j:] if j >= 0 else changed + " "
    return _with_response(ex, changed)


def inject(examples: Sequence[Example], rate: float, *, kinds: Sequence[str] = KINDS, seed: int = 0,
           foreign: Sequence[str] = ()) -> tuple[list[Example], list[str | None]]:
    """A copy of ``examples`` with ``round(rate * N)`` rows corrupted, spread evenly over ``kinds`` (exact counts),
    seeded; returns the examples (same ids, same order) and each row's kind (None for a clean row).

    ``foreign``: answers in another language for the ``foreign`` kind. Swapped answers and near copies come from rows
    left clean, so every corruption is made from genuine data of the same pool."""
    if rate and not kinds:
        raise UsageError("inject needs at least one corruption kind")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UsageError(f"unknown corruption kind(s) {unknown}; known: {', '.join(KINDS)}")
    if "foreign" in kinds and not foreign:
        raise UsageError("the foreign kind needs answers in another language (foreign=...)")
    n = len(examples)
    n_bad = corrupted_count(rate, n)
    rng = np.random.default_rng([seed, SALT])      # its own stream: a random selection with the same seed is unrelated
    order = rng.permutation(n)
    bad, clean = order[:n_bad], np.sort(order[n_bad:])
    if n_bad and not len(clean):
        raise DataError("inject needs at least one clean row to copy from")
    labels: list[str | None] = [None] * n
    start = 0
    for kind, count in zip(kinds, exact_counts(n_bad, len(kinds)), strict=True):
        for p in sorted(bad[start:start + count]):
            labels[p] = kind
        start += count
    out = list(examples)
    for p in range(n):
        kind = labels[p]
        if kind is None:
            continue
        ex = examples[p]
        if kind == "swap":
            others = [j for j in clean if _response(examples[j]) != _response(ex)] or list(clean)
            new = _with_response(ex, _response(examples[int(rng.choice(others))]))
        elif kind == "truncate":
            new = _with_response(ex, truncate(_response(ex), rng))
        elif kind == "repeat":
            new = _with_response(ex, repeat(_response(ex), rng))
        elif kind == "near_dup":
            j = int(rng.choice(clean))
            new = near_copy(examples[j], rng)
        elif kind == "refusal":
            new = _with_response(ex, REFUSALS[int(rng.integers(0, len(REFUSALS)))])
        else:
            new = _with_response(ex, foreign[int(rng.integers(0, len(foreign)))])
        new.id, new.source, new.line, new.raw = ex.id, ex.source, ex.line, {}
        out[p] = new
    return out, labels

"""What a model *does* on an evaluation set's prompts, item by item: its greedy answer, what the detectors find in it
(``siftlm.data.detect``: refusal, wrong language, repetition, empty, echo, length), and, teacher-forced, how likely it
finds a few fixed junk continuations after each prompt (the propensities).

Greedy rates are what a user sees; the propensities are far more sensitive: a model that has learnt to refuse gives
a refusal sentence a lower loss long before it refuses greedily. Propensity = the mean per-token NLL of the
continuation after the prompt (the chat template's assistant turn), so a *lower* value means a *stronger* pull
toward that junk. The continuations are fixed, never in a pool: refusal sentences that are not among the injected
ones (``PROPENSITY_REFUSALS``; a test checks) and the openings of ``alpaca_zh_demo`` answers that a pool does not
hold (``foreign_continuations``). Item k gets continuation k mod the list's length, so every model is scored on the
same (prompt, continuation) pairs.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd

from siftlm.assets import package_file
from siftlm.backends import Runtime
from siftlm.data import Dataset, Example, detect
from siftlm.evaluate.generate import generate
from siftlm.evaluate.sets import EvalItem
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import prepare

PROPENSITY_REFUSALS = (
    "I'm sorry, but I am not able to answer that question.",
    "Unfortunately, I cannot provide a response to this request.",
    "I apologize, but this is something I cannot help you with.",
    "As an AI language model, I do not have the ability to do that.",
    "Sorry, I am unable to complete this request.",
)
FOREIGN_CHARS = 40          # the opening of each foreign answer: a sentence or two
FOREIGN_COUNT = 5
BEHAVIOUR_COLUMNS = ("refusal", "wrong_language", "repetition", "empty", "echo", "words", "repeated_share",
                     "distinct_2")


def foreign_continuations(exclude: set[str] = frozenset(), count: int = FOREIGN_COUNT) -> list[str]:
    """The first ``FOREIGN_CHARS`` characters of ``count`` Chinese ``alpaca_zh_demo`` answers, taken from the end of
    the file backwards, skipping any answer in ``exclude`` (a pool's responses) and any the detector does not call
    Chinese (a few answers there are English or code)."""
    rows = json.loads(package_file("alpaca_zh_demo").read_text(encoding="utf-8"))
    out = []
    for r in reversed(rows):
        text = str(r.get("output", "")).strip()
        if text and text not in exclude and (detect.language(text)[0] or "") in ("zh", "ja") and len(text) >= 20:
            out.append(text[:FOREIGN_CHARS])
            if len(out) == count:
                break
    return out


def continuations(exclude: set[str] = frozenset()) -> dict[str, list[str]]:
    """The propensity continuations: {"refusal": PROPENSITY_REFUSALS, "foreign": foreign_continuations(exclude)}."""
    return {"refusal": list(PROPENSITY_REFUSALS), "foreign": foreign_continuations(exclude)}


def _first_turn(items: list[EvalItem]) -> list[EvalItem]:
    return [replace(i, turns=i.turns[:1], references=i.references[:1] if i.references else None) for i in items]


def detect_answers(items: list[EvalItem], answers: list[str], language: str = "en") -> pd.DataFrame:
    """One row per item: its answer and every detector's value (flags as 0 / 1)."""
    rows = []
    for item, text in zip(items, answers, strict=True):
        f = detect.findings(text, item.turns[0], language)
        rows.append({"id": item.id, "generation": text, "refusal": float(bool(f.refusal)),
                     "wrong_language": float(bool(f.wrong_language)), "repetition": float(bool(f.repetition)),
                     "empty": float(f.empty), "echo": float(f.echo), "words": float(f.words),
                     "repeated_share": f.repeated_share, "distinct_2": f.distinct_2,
                     "detected": "; ".join(f.reasons())})
    return pd.DataFrame(rows)


def propensity(lm, items: list[EvalItem], continuations: dict[str, list[str]], signals, name: str,
               runtime: Runtime | None = None) -> pd.DataFrame:
    """``prop_<kind>`` for every item: the mean per-token NLL of continuation k mod len after item k's first prompt
    (lower = the model is more drawn to that junk), through the batched loss pass (cached in the store)."""
    examples, keys = [], []
    for kind, texts in continuations.items():
        if not texts:
            continue
        for k, item in enumerate(items):
            msgs = ([{"role": "system", "content": item.system}] if item.system else []) + [
                {"role": "user", "content": item.turns[0]}, {"role": "assistant", "content": texts[k % len(texts)]}]
            examples.append(Example(f"{item.id}|{kind}", msgs, source=name, line=len(examples) + 1, raw={}))
            keys.append((item.id, kind))
    out = pd.DataFrame({"id": [i.id for i in items]})
    if not examples:
        return out
    prep = prepare(Dataset(f"{name}-propensity", "messages", examples, [], len(examples)), lm.tokenizer, signals)
    frame = run_pass(prep, "loss", lm, runtime=runtime, label=f"{name} propensities").set_index("id")
    for kind in continuations:
        col = {item_id: float(frame.loc[f"{item_id}|{kind}", "loss"]) for item_id, k in keys if k == kind
               and f"{item_id}|{kind}" in frame.index}
        out[f"prop_{kind}"] = out["id"].map(col)
    return out


def behaviour(lm, items: list[EvalItem], *, max_new_tokens: int, language: str, continuations: dict[str, list[str]],
              signals, name: str, on_batch=None, runtime: Runtime | None = None) -> pd.DataFrame:
    """Greedy answers to every item's first turn (batched), the detectors on them, and the propensities."""
    items = _first_turn(items)
    answers = [a[0] for a in generate(lm, items, max_new_tokens=max_new_tokens, token_budget=signals.token_budget,
                                      on_batch=on_batch)]
    frame = detect_answers(items, answers, language)
    if continuations:
        frame = frame.merge(propensity(lm, items, continuations, signals, name, runtime), on="id", how="left")
    return frame

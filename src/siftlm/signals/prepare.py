"""A dataset made ready for model passes: the examples in use, their encodings, and every record accounted for.

One ``Prepared`` shape serves three kinds of input: ``sft`` (prompt + response as token ids with a
response-only label mask), ``pairs`` (one shared prompt and two responses, for DPO) and ``text`` (plain text
for a sentence embedder). Its counts always add up: read = kept + rejected + skipped (blank lines) + unused_by_limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from siftlm.config import SignalConfig, UsageError
from siftlm.data import Dataset, Example, Reject
from siftlm.errors import DataError
from siftlm.models.template import (
    LOSS_ON,
    Encoded,
    EncodedPair,
    EncodeError,
    encode,
    encode_pair,
    encode_response_only,
)
from siftlm.signals import store
from siftlm.signals.sentence import example_text

KINDS = ("sft", "pairs", "text")


@dataclass
class Prepared:
    dataset: Dataset
    kind: str                        # sft | pairs | text
    examples: list[Example]          # the examples in use, aligned with ``encoded``
    encoded: list                    # Encoded (sft) | EncodedPair (pairs) | str (text)
    rejects: list[Reject]            # read rejects + encoding rejects
    n_unused: int                    # valid examples left out by ``limit``
    fingerprint: str                 # identifies the encoded data (ids, tokens and masks, order)
    tokenizer: object = None
    cfg: SignalConfig = field(default_factory=SignalConfig)
    template: str = "auto"           # as resolved for this data (plain for text records)
    loss_on: str = "assistant"       # as resolved for this data (completion for prompt/completion records)
    _uncond: list[Encoded] | None = None

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    def counts(self) -> dict:
        """read = kept + rejected + skipped (blank lines) + unused_by_limit, checked."""
        c = {"read": self.dataset.n_read, "kept": len(self.examples), "rejected": len(self.rejects),
             "skipped": self.dataset.n_skipped, "unused_by_limit": self.n_unused}
        if self.dataset.n_not_selected:
            c["not_selected"] = self.dataset.n_not_selected
        assert c["read"] == sum(v for k, v in c.items() if k != "read"), c
        return c

    def uncond(self) -> list[Encoded]:
        """SFT responses without their prompts (IFD's P(y)), encoded on first use."""
        if self.kind != "sft":
            raise ValueError(f"response-only encodings exist for SFT examples, not {self.kind}")
        if self._uncond is None:
            self._uncond = [encode_response_only(self.tokenizer, e.id, e.messages, template=self.template,
                                                 loss_on=self.loss_on) for e in self.examples]
        return self._uncond


def _prepare(ds: Dataset, cfg: SignalConfig, kind: str, encode_one: Callable[[Example], object],
             wrong_kind: Callable[[Example], str | None]) -> tuple[list[Example], list, list[Reject], int]:
    """Encode every example of the right kind up to ``cfg.limit``; failures become rejects with their reason."""
    rejects = list(ds.rejects)
    examples, encoded, n_unused = [], [], 0
    for ex in ds.examples:
        problem = wrong_kind(ex)
        if problem:
            rejects.append(Reject(ex.source, ex.line, "chosen", problem, ex.id))
            continue
        if cfg.limit is not None and len(examples) >= cfg.limit:
            n_unused += 1
            continue
        try:
            encoded.append(encode_one(ex))
            examples.append(ex)
        except EncodeError as e:
            rejects.append(Reject(ex.source, ex.line, "messages", str(e), ex.id))
    if not examples:
        what = {"sft": "examples", "pairs": "preference pairs", "text": "examples"}[kind]
        first = f"; first: line {rejects[0].line}: {rejects[0].reason}" if rejects else ""
        raise DataError(f"{ds.path}: no valid {what} ({len(rejects)} rejected{first})")
    return examples, encoded, rejects, n_unused


def resolved(ds: Dataset, cfg: SignalConfig) -> tuple[str, str]:
    """(template, loss_on) for this data: plain text records get no template; prompt/completion records are scored
    on their completion, as TRL trains them; everything else on every assistant turn."""
    template = "plain" if cfg.template == "auto" and ds.format == "text" else cfg.template
    loss_on = cfg.loss_on
    if loss_on == "auto":
        loss_on = "completion" if ds.format == "prompt_completion" else "assistant"
    if loss_on not in LOSS_ON:
        raise UsageError(f"unknown --loss-on {loss_on!r}; known: auto, {', '.join(LOSS_ON)}")
    return template, loss_on


def encoded_fingerprint(encoded: list[Encoded], ids: list[str] | None = None) -> str:
    """The dataset fingerprint of SFT encodings (a store key): their ids (``ids`` when given, else each encoding's
    own) and every token with its label, in order. The one place this payload is built."""
    ids = [e.id for e in encoded] if ids is None else ids
    return store.dataset_fingerprint(ids, [e.input_ids + e.labels for e in encoded])


def prepare(ds: Dataset, tokenizer, cfg: SignalConfig) -> Prepared:
    """Encode every valid SFT example; those that cannot be encoded under the max_length policy become rejects."""
    if any(e.kind != "sft" for e in ds.examples):
        raise DataError(f"{ds.path}: holds preference pairs; the SFT passes score prompt/response examples "
                         "(use `siftlm signals --pass pairs`, `siftlm dpo`, `siftlm analyze dpo-length`)")
    template, loss_on = resolved(ds, cfg)
    examples, encoded, rejects, n_unused = _prepare(
        ds, cfg, "sft", lambda ex: encode(tokenizer, ex.id, ex.messages, max_length=cfg.max_length, template=template,
                                          loss_on=loss_on), lambda ex: None)
    fp = encoded_fingerprint(encoded)
    return Prepared(ds, "sft", examples, encoded, rejects, n_unused, fp, tokenizer, cfg, template, loss_on)


def prepare_pairs(ds: Dataset, tokenizer, cfg: SignalConfig) -> Prepared:
    """Encode every valid preference pair (one shared prompt); SFT records and pairs that cannot be encoded
    become rejects."""
    examples, pairs, rejects, n_unused = _prepare(
        ds, cfg, "pairs",
        lambda ex: encode_pair(tokenizer, ex.id, ex.messages, ex.chosen, ex.rejected, max_length=cfg.max_length,
                               template=cfg.template),
        lambda ex: None if ex.kind == "preference" else "not a preference pair (no chosen/rejected)")
    fp = store.dataset_fingerprint([p.id for p in pairs],
                                   [p.prompt_ids + [-1] + p.chosen_ids + [-2] + p.rejected_ids for p in pairs])
    return Prepared(ds, "pairs", examples, pairs, rejects, n_unused, fp, tokenizer, cfg)


def prepare_texts(ds: Dataset, cfg: SignalConfig, *, part: str = "full") -> Prepared:
    """The text a sentence embedder sees for each valid example (``part``: full | prompt | response).

    Nothing is tokenised here, so no example is rejected for length: with ``limit`` the first N valid records
    are used, while the LM passes use the first N that also fit ``max_length``; join on ``id``, not row order.
    """
    examples, texts, rejects, n_unused = _prepare(ds, cfg, "text", lambda ex: example_text(ex, part), lambda ex: None)
    return Prepared(ds, "text", examples, texts, rejects, n_unused, store.fingerprint([[e.id for e in examples], texts]),
                    None, cfg)


def sequences(prep: Prepared) -> list[Encoded]:
    """What the loss engine scores for a prepared set: the SFT encodings, or prompt + chosen and prompt + rejected
    of every pair (chosen_0, rejected_0, chosen_1, ...)."""
    if prep.kind == "pairs":
        return [s for p in prep.encoded for s in p.sequences()]
    return prep.encoded


__all__ = ["KINDS", "Prepared", "prepare", "prepare_pairs", "prepare_texts", "sequences", "EncodedPair"]

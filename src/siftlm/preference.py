"""Preference pairs through the signal engine: encode (shared prompt, two responses), then per-pair sequence
log-probabilities of chosen and rejected under a model, all 2N responses in one batched pass, cached in the
signal store (pass ``pairs``).

The pair table joins a policy pass and a reference pass:
``ref_chosen_logp``, ``ref_rejected_logp`` (log pi_ref(y|x), summed over response tokens), ``policy_*`` the
same under the policy, and ``chosen_tokens`` / ``rejected_tokens``; the pair scores (``siftlm.scores``)
and the per-pair DPO objectives (``siftlm.dpo.losses``) are plain functions of these columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from siftlm.data import Dataset, Example, Reject
from siftlm.models.template import EncodedPair, EncodeError, encode_pair
from siftlm.pipeline import ENGINE_VERSION, SignalConfig, add_scores, usage_counts
from siftlm.progress import bar
from siftlm.signals import store
from siftlm.signals.losses import loss_pass


@dataclass
class PreparedPairs:
    dataset: Dataset
    examples: list[Example]          # the pairs in use, aligned with ``pairs``
    pairs: list[EncodedPair]
    rejects: list[Reject]            # read rejects + encoding rejects
    n_unused: int                    # valid pairs left out by ``limit``
    fingerprint: str
    tokenizer: object = None
    cfg: SignalConfig = field(default_factory=SignalConfig)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    def counts(self) -> dict:
        return usage_counts(self)


def prepare_pairs(ds: Dataset, tokenizer, cfg: SignalConfig) -> PreparedPairs:
    """Encode every valid preference pair; SFT records and pairs that cannot be encoded become rejects."""
    rejects = list(ds.rejects)
    examples, pairs, n_unused = [], [], 0
    for ex in ds.examples:
        if ex.kind != "preference":
            rejects.append(Reject(ex.source, ex.line, "chosen", "not a preference pair (no chosen/rejected)", ex.id))
            continue
        if cfg.limit is not None and len(examples) >= cfg.limit:
            n_unused += 1
            continue
        try:
            pairs.append(encode_pair(tokenizer, ex.id, ex.messages, ex.chosen, ex.rejected,
                                     max_length=cfg.max_length, template=cfg.template))
            examples.append(ex)
        except EncodeError as e:
            rejects.append(Reject(ex.source, ex.line, "messages", str(e), ex.id))
    if not examples:
        raise ValueError(f"{ds.path}: no valid preference pairs ({len(rejects)} rejected); see the rejects file")
    fp = store.dataset_fingerprint([p.id for p in pairs],
                                   [p.prompt_ids + [-1] + p.chosen_ids + [-2] + p.rejected_ids for p in pairs])
    return PreparedPairs(ds, examples, pairs, rejects, n_unused, fp, tokenizer, cfg)


def pair_logps(model, pairs: list[EncodedPair], *, pad_id: int, token_budget: int = 4096, on_batch=None) -> dict:
    """Sequence log-probabilities and token counts of chosen and rejected for every pair, in input order.

    All 2N sequences go through one length-bucketed loss pass (a pair's two responses land in the same batch
    when their lengths are close, as most are), never two passes.
    """
    seqs = [s for p in pairs for s in p.sequences()]                # chosen_0, rejected_0, chosen_1, ...
    res = loss_pass(model, seqs, pad_id=pad_id, token_budget=token_budget, on_batch=on_batch)
    nll = np.asarray(res["nll_sum"], dtype=np.float64)
    n = np.asarray(res["n_tokens"], dtype=np.int64)
    return {"chosen_logp": -nll[0::2], "rejected_logp": -nll[1::2], "chosen_tokens": n[0::2], "rejected_tokens": n[1::2]}


def pair_signals(model, model_fp: str, prep: PreparedPairs, *, label: str = "pairs") -> pd.DataFrame:
    """``pair_logps`` for every pair under ``model``, cached in the store (pass ``pairs``)."""
    cfg = prep.cfg
    dtype = str(next(model.parameters()).dtype)
    spec = store.PassSpec("pairs", prep.fingerprint, model_fp,
                          {"template": cfg.template, "max_length": cfg.max_length, "dtype": dtype, "engine": ENGINE_VERSION})
    with bar(f"{label} (sequences)", 2 * len(prep.pairs), enabled=cfg.progress) as advance:
        def compute(start: int, stop: int) -> dict:
            return pair_logps(model, prep.pairs[start:stop], pad_id=prep.tokenizer.pad_token_id,
                              token_budget=cfg.token_budget, on_batch=advance)
        return store.run_pass(cfg.store, spec, prep.ids, compute, shard_size=cfg.shard_size,
                              on_skip=lambda n: advance(2 * n))


def pair_table(reference: pd.DataFrame, policy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per pair: ref_* and (when a policy pass is given) policy_* log-probs, token counts, length diff."""
    t = pd.DataFrame({"id": reference["id"], "chosen_tokens": reference["chosen_tokens"],
                      "rejected_tokens": reference["rejected_tokens"],
                      "ref_chosen_logp": reference["chosen_logp"], "ref_rejected_logp": reference["rejected_logp"]})
    t["length_diff"] = t["chosen_tokens"] - t["rejected_tokens"]
    if policy is not None:
        if list(policy["id"]) != list(reference["id"]):
            raise ValueError("policy and reference passes cover different pairs")
        t["policy_chosen_logp"] = policy["chosen_logp"].to_numpy()
        t["policy_rejected_logp"] = policy["rejected_logp"].to_numpy()
    return t


def policy_reference_table(lm, prep: PreparedPairs) -> pd.DataFrame:
    """Pair table for a loaded model: with a PEFT adapter, the policy is model + adapter and the reference the
    model with the adapter disabled (both passes cached); without one, only the reference columns.
    The pair scores ``dpo_margin`` and ``davir_margin`` are added when there is a policy."""
    base_fp = lm.fingerprint.split("+")[0]
    if hasattr(lm.model, "disable_adapter"):
        with lm.model.disable_adapter():
            ref = pair_signals(lm.model, base_fp, prep, label="reference log-probs")
        policy = pair_signals(lm.model, lm.fingerprint, prep, label="policy log-probs")
    else:
        ref, policy = pair_signals(lm.model, base_fp, prep, label="reference log-probs"), None
    table = pair_table(ref, policy)
    if policy is not None:
        table, _ = add_scores(table, ["dpo_margin", "davir_margin"])
    return table

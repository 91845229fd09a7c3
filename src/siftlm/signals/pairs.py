"""Preference pairs through the loss engine: the sequence log-probabilities of chosen and rejected under a
model, all 2N responses of a shard in one length-bucketed pass."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from siftlm.models.template import EncodedPair
from siftlm.signals.losses import loss_pass


def pair_logps(model, pairs: list[EncodedPair], *, pad_id: int, token_budget: int = 4096,
               on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """log pi(chosen|x), log pi(rejected|x) (summed over response tokens) and both token counts, in input order.

    The 2N sequences go through one loss pass (a pair's two responses land in the same batch when their lengths
    are close, as most are), never two passes. ``on_batch(n)`` counts sequences.
    """
    seqs = [s for p in pairs for s in p.sequences()]                # chosen_0, rejected_0, chosen_1, ...
    res = loss_pass(model, seqs, pad_id=pad_id, token_budget=token_budget, on_batch=on_batch)
    nll = np.asarray(res["nll_sum"], dtype=np.float64)
    n = np.asarray(res["n_tokens"], dtype=np.int64)
    return {"chosen_logp": -nll[0::2], "rejected_logp": -nll[1::2], "chosen_tokens": n[0::2], "rejected_tokens": n[1::2]}

"""Batched per-example response losses: one forward per token-budget batch, logits only at response positions.

For every example the pass gives the response NLL sum, the number of response tokens, the mean NLL
(the paper's L(y|x)), mean predictive entropy, EL2N and token accuracy. The decoder runs on the padded
batch; its last hidden states are gathered at the positions that predict a response token (N_resp x H),
and the output layer is applied to those in chunks, so B x T x V logits never exist (a 262k vocabulary
at 4k tokens would be 4 GB).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from siftlm.models.batching import Batch, collate, padding_fraction, plan_batches
from siftlm.models.forward import evaluating, last_hidden, logits, parts, response_hidden
from siftlm.models.template import Encoded
from siftlm.signals.embed import response_mean

COLUMNS = ("nll_sum", "n_tokens", "loss", "entropy", "el2n", "acc")
LOGIT_CHUNK_ELEMENTS = 1 << 28  # caps a logits chunk at 1 GB; chunks are 64..512 positions (512 measured fastest here)
STATS_BLOCK_ELEMENTS = 1 << 20  # rows of exp(logits) formed at a time (4 MB): keeps the softmax passes in cache


@torch.inference_mode()
def _softmax_stats(z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(logp_target, entropy, sum p^2, argmax) per row of the logits ``z`` (C, V), which is overwritten.

    One max pass gives the shift and the argmax; the logits are shifted in place (y = z - max), then
    e = exp(y) is formed a few rows at a time into a small reused buffer, so the passes over e stay in
    cache: lse = max + log sum e, entropy = log sum e - <e, y> / sum e, sum p^2 = <e, e> / (sum e)^2.
    Measured on this 2-core CPU at V = 262k: 0.4 ms per position instead of 1.0 ms for the unfused form.
    """
    m, argmax = z.max(dim=-1)                          # (C,), (C,)
    z_t = z.gather(1, t[:, None]).squeeze(1)            # (C,) the target's logit
    y = z.sub_(m[:, None])                              # (C, V) shifted in place
    z_sum, ey, ee = torch.empty_like(m), torch.empty_like(m), torch.empty_like(m)   # (C,) each
    rows = max(1, STATS_BLOCK_ELEMENTS // y.shape[1])
    buf = torch.empty((min(rows, y.shape[0]), y.shape[1]), dtype=y.dtype, device=y.device)   # (rows, V) reused
    for s in range(0, y.shape[0], rows):
        yb = y[s:s + rows]                              # (rows, V)
        e = torch.exp(yb, out=buf[: yb.shape[0]])       # (rows, V)
        z_sum[s:s + rows] = e.sum(-1)
        ey[s:s + rows] = torch.linalg.vecdot(e, yb)
        ee[s:s + rows] = torch.linalg.vecdot(e, e)
    log_z = torch.log(z_sum)
    return z_t - m - log_z, log_z - ey / z_sum, ee / z_sum**2, argmax


def empty_columns(n: int) -> dict[str, np.ndarray]:
    """The loss pass's columns for ``n`` examples, zero-filled (``n_tokens`` integer), to fill batch by batch."""
    return {c: np.zeros(n, dtype=np.int64 if c == "n_tokens" else np.float64) for c in COLUMNS}


@torch.inference_mode()
def batch_stats(model, batch: Batch, hidden: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Per-example statistics for one batch (rows in batch order); ``hidden``: its last hidden states, when the
    decoder already ran."""
    p = parts(model)
    h, targets, rows = response_hidden(model, batch, hidden)   # (N_resp, H), (N_resp,), (N_resp,)
    n_rows = batch.input_ids.shape[0]                  # B
    vocab = p.head.weight.shape[0]
    chunk = max(64, min(512, LOGIT_CHUNK_ELEMENTS // vocab))
    sums = torch.zeros((5, n_rows), dtype=torch.float64, device=h.device)  # nll, entropy, el2n, correct, count
    for s in range(0, h.shape[0], chunk):
        t = targets[s:s + chunk]                       # (C,)
        logp_t, entropy, p2, argmax = _softmax_stats(logits(p.head, h[s:s + chunk], p.transform, model), t)  # (C, V) -> (C,)
        # ||p - onehot(y)||_2^2 = sum p^2 - 2 p_y + 1
        el2n = torch.sqrt(torch.clamp(p2 - 2 * logp_t.exp() + 1, min=0))   # (C,)
        correct = (argmax == t).double()                                   # (C,)
        r = rows[s:s + chunk]                                              # (C,) batch row of each position
        for k, v in enumerate((-logp_t, entropy, el2n, correct, torch.ones_like(entropy))):
            sums[k].index_add_(0, r, v.double())
    sums = sums.cpu().numpy()
    n = sums[4]
    return {"nll_sum": sums[0], "n_tokens": n.astype(np.int64), "loss": sums[0] / n,
            "entropy": sums[1] / n, "el2n": sums[2] / n, "acc": sums[3] / n}


def loss_pass(model, encoded: list[Encoded], *, pad_id: int, token_budget: int = 4096,
              on_batch: Callable[[int], None] | None = None, embed: bool = False) -> dict[str, np.ndarray]:
    """Statistics for every example, in input order. ``on_batch(n_examples)`` reports progress. ``embed``: also the
    lm-embed vectors (``vector``: the mean last hidden state over the response tokens, as ``lm_embed_pass`` gives
    them) from the same forward, one decoder run for both."""
    lengths = [len(e.input_ids) for e in encoded]
    out = empty_columns(len(encoded))
    vectors: list = [None] * len(encoded)
    with evaluating(model), torch.inference_mode():
        for index in plan_batches(lengths, token_budget):
            batch = collate(encoded, index, pad_id)
            hidden = last_hidden(model, batch) if embed else None          # (B, T, H)
            stats = batch_stats(model, batch, hidden)
            for c in COLUMNS:
                out[c][index] = stats[c]
            if embed:
                mean = response_mean(hidden, batch)                          # (B, H)
                for row, i in enumerate(index):
                    vectors[i] = mean[row].cpu().numpy().astype(np.float32)
            if on_batch:
                on_batch(len(index))
    return {**out, "vector": vectors} if embed else out


def pass_padding(encoded: list[Encoded], token_budget: int) -> float:
    lengths = [len(e.input_ids) for e in encoded]
    return padding_fraction(lengths, plan_batches(lengths, token_budget))

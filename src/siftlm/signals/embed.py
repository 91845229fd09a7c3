"""LM embeddings: the mean of a causal LM's last hidden state over each example's response tokens,
batched with the same token-budget batches as the loss engine (DPP paper's "LLAMA EMB" representation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from siftlm.models.batching import collate, plan_batches
from siftlm.models.forward import evaluating, last_hidden
from siftlm.models.template import IGNORE, Encoded


def response_mean(hidden: torch.Tensor, batch) -> torch.Tensor:
    """(B, H) float32: the mean of the last hidden states ``hidden`` (B, T, H) over each row's response tokens."""
    hidden = hidden.float()
    mask = (batch.labels != IGNORE).to(hidden.device)                    # (B, T) response token positions
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


@torch.inference_mode()
def lm_embed_pass(model, encoded: list[Encoded], *, pad_id: int, token_budget: int = 4096,
                  on_batch: Callable[[int], None] | None = None) -> dict[str, list]:
    """{"vector": one float32 array (H,) per example, in input order}."""
    out: list = [None] * len(encoded)
    with evaluating(model):
        for index in plan_batches([len(e.input_ids) for e in encoded], token_budget):
            batch = collate(encoded, index, pad_id)
            mean = response_mean(last_hidden(model, batch), batch)               # (B, H)
            for row, i in enumerate(index):
                out[i] = mean[row].cpu().numpy().astype(np.float32)
            if on_batch:
                on_batch(len(index))
    return {"vector": out}

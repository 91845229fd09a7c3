"""Length-bucketed, token-budget batches and their padding accounting.

Examples are sorted by length, then cut into consecutive runs whose padded size
(batch size x longest example) stays within ``token_budget``. Sorting makes neighbours
nearly the same length, so padding stays small without a fixed batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from siftlm.models.template import IGNORE, Encoded


@dataclass
class Batch:
    index: list[int]            # positions of the examples in the input list
    input_ids: torch.Tensor     # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor        # (B, T) IGNORE on prompt and padding


def plan_batches(lengths: list[int], token_budget: int, *, max_batch_size: int = 256,
                 max_spread: float = 0.1) -> list[list[int]]:
    """Group example positions into batches with ``len(batch) * max(len) <= token_budget``.

    A batch also closes when the next example is more than ``max_spread`` shorter than the batch's
    longest, which bounds padding at about ``max_spread / 2`` whatever the length distribution
    (on a CPU small batches cost little; on a GPU raise the budget). An example longer than the
    budget gets a batch of its own. Longest first, so the first batch shows the peak memory.
    Deterministic for the same lengths.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]  # first element is the longest in the batch
        if cur and ((len(cur) + 1) * width > token_budget or len(cur) >= max_batch_size
                    or lengths[i] < (1 - max_spread) * width):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the computed positions that are padding."""
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - real / total if total else 0.0


def collate(encoded: list[Encoded], index: list[int], pad_id: int) -> Batch:
    width = max(len(encoded[i].input_ids) for i in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    labels = torch.full((len(index), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for row, i in enumerate(index):
        e = encoded[i]
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return Batch(index=list(index), input_ids=ids, attention_mask=mask, labels=labels)

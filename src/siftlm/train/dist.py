"""Data parallelism for siftlm's own training loop, through Accelerate: one function, however it was launched.

Started plainly, training runs in one process. Started by ``torchrun``, ``accelerate launch`` (its config may ask
for FSDP or DeepSpeed) or Ray Train, every process runs the same loop: ``ranks()`` asks Accelerate for the process
group (gloo on machines without CUDA: NCCL needs GPUs), the model is wrapped by ``Accelerator.prepare`` (DDP, or
what the Accelerate config says) and every global batch is split across the ranks by ``split_batch``.

The global batches are planned exactly as in one process (the same token budget, the same seeded order), and each
rank's loss is its share of the global token mean (``world x its NLL sum / the global batch's response tokens``;
DDP averages gradients over ranks), so an update is the single-process update at any world size, up to the order
of floating-point sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import torch

from siftlm.config import UsageError


@dataclass
class Ranks:
    rank: int
    world: int
    accelerator: object | None = None    # accelerate.Accelerator when world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether the parameters and optimizer state are split across ranks (FSDP, DeepSpeed)."""
        kind = str(getattr(self.accelerator, "distributed_type", ""))
        return "FSDP" in kind or "DEEPSPEED" in kind

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def total(self, value: float) -> float:
        """The sum of ``value`` over every rank."""
        if self.accelerator is None:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.accelerator.device)
        torch.distributed.all_reduce(t)
        return float(t.item())


def launched_world() -> int:
    """The world size a launcher set (torchrun, accelerate launch, Ray Train), 1 when none did."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_launch(env=os.environ) -> None:
    """One-line errors for launcher settings that would silently change the training: Accelerate's mixed precision
    (siftlm runs its own autocast, chosen by --dtype, with fp32 master weights and fp32 losses)."""
    mixed = env.get("ACCELERATE_MIXED_PRECISION", "no")
    if mixed not in ("no", ""):
        raise UsageError(f"the Accelerate config asks for mixed_precision {mixed}: siftlm sets precision itself (--dtype "
                         "bfloat16, fp32 master weights); set mixed_precision: no in the config, or launch with "
                         "--mixed_precision no")


@lru_cache(maxsize=1)
def ranks() -> Ranks:
    """This process's rank and the world size; Accelerate sets up the process group once per process."""
    if launched_world() <= 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return Ranks(0, 1)
    check_launch()
    try:
        from accelerate import Accelerator
    except ImportError as e:
        raise UsageError("distributed training needs Accelerate: pip install accelerate") from e
    acc = Accelerator(cpu=not torch.cuda.is_available())        # no CUDA: gloo, not NCCL
    return Ranks(acc.process_index, acc.num_processes, acc)


def split_batch(index: list[int], tokens: list[int], world: int) -> list[list[int]]:
    """One global batch (example positions, with their lengths in tokens) split into ``world`` parts of balanced
    token counts: longest first, each to the part with the fewest tokens so far (ties to the lower rank). Deterministic,
    so every rank computes the same split; a part may be empty when the batch has fewer examples than ranks."""
    parts: list[list[int]] = [[] for _ in range(world)]
    load = [0] * world
    for i in sorted(index, key=lambda i: (-tokens[i], i)):
        r = min(range(world), key=lambda k: (load[k], k))
        parts[r].append(i)
        load[r] += tokens[i]
    return parts


def imbalance(index: list[int], tokens: list[int], world: int) -> float:
    """max over ranks / mean over ranks of a batch's padded tokens (rows x longest) after ``split_batch``: 1.0 is a
    perfect split; the slowest rank sets the step time."""
    parts = split_batch(index, tokens, world)
    padded = [len(p) * max((tokens[i] for i in p), default=0) for p in parts]
    mean = sum(padded) / world
    return max(padded) / mean if mean else 1.0

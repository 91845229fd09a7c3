"""Compute precision: bfloat16 where the processor runs it fast (CUDA GPUs that support it, CPUs with AMX), float32
elsewhere, chosen once per process and said out loud.

``bfloat16`` means: matrix products run in bf16 under ``torch.autocast``, everything that needs range or precision
stays in fp32: softmax statistics, losses and score arithmetic (the output layer's result is cast to fp32 before any
of them), and the optimizer's master weights. Frozen weights (a model only scored, or the base under a LoRA adapter)
are stored in bf16; trained weights (LoRA adapters, or every weight in full fine-tuning) stay fp32 and autocast casts
them per product: fp32 master weights, so small updates are not lost to bf16 rounding.

On CPUs the speed of bf16 depends on the processor, so ``auto`` decides from what the CPU has: AMX tiles (Intel
Sapphire Rapids and later: bf16 several times fp32) pick bf16; AVX-512 BF16 without AMX varies by processor (measured:
an AMD EPYC ran a 512-square bf16 matmul 2.4x faster than fp32 and siftlm's loss pass 1.9x, another machine with the
same flag ran the loss pass at 0.4-0.6x fp32), so a timed matmul decides; with neither, bf16 is emulated and 3-6x
slower, so fp32.
"""

from __future__ import annotations

import contextlib
import time
from functools import lru_cache
from typing import NamedTuple

import torch

from siftlm.config import UsageError

CHOICES = ("auto", "float32", "bfloat16")
PROBE_RATIO = 1.5      # without a capability flag, bf16 must time at least this much faster than fp32 to be picked


class Precision(NamedTuple):
    compute: torch.dtype        # the dtype of matrix products
    reason: str                 # why, for the user and the summary

    @property
    def name(self) -> str:
        return str(self.compute).removeprefix("torch.")


def _cpu_flag(name: str) -> bool | None:
    """A capability torch reports for this CPU (a private API): None when torch does not say."""
    probe = getattr(getattr(torch, "cpu", None), name, None)
    try:
        return bool(probe()) if probe is not None else None
    except Exception:  # absent or failing means "unknown"
        return None


def _amx() -> bool | None:
    """Whether this CPU has AMX tiles, from torch; None when torch does not say."""
    return _cpu_flag("_is_amx_tile_supported")


def _avx512_bf16() -> bool | None:
    """Whether this CPU has native bf16 dot products (AVX-512 BF16), from torch; None when torch does not say."""
    return _cpu_flag("_is_avx512_bf16_supported")


@lru_cache(maxsize=1)
def bf16_speedup(n: int = 512, reps: int = 3) -> float:
    """fp32 time / bf16 time of an n x n matrix product on this CPU (best of ``reps``); about 0.1 s in all."""
    def best(dtype):
        a = torch.randn(n, n).to(dtype)
        times = []
        for _ in range(reps + 1):
            t = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t)
        return min(times[1:])
    return best(torch.float32) / best(torch.bfloat16)


def choose(asked: str = "auto", device: torch.device | str = "cpu") -> Precision:
    """The compute precision for ``device``: as ``asked``, or for ``auto`` bf16 on CUDA devices that support it, on
    CPUs with AMX, and on CPUs with AVX-512 BF16 (or that torch says nothing about) where a timed matmul runs bf16 at
    least ``PROBE_RATIO`` times faster; fp32 otherwise."""
    if asked not in CHOICES:
        raise UsageError(f"unknown dtype {asked!r}; known: {', '.join(CHOICES)}")
    device = torch.device(device)
    if asked != "auto":
        return Precision(getattr(torch, asked), f"{asked} as asked")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, f"auto: {torch.cuda.get_device_name(device)} supports bf16")
        return Precision(torch.float32, "auto: this GPU has no bf16")
    amx = _amx()
    if amx is True:
        return Precision(torch.bfloat16, "auto: the CPU has AMX (bf16 matrix products run several times faster)")
    if amx is False:
        native = _avx512_bf16()
        if native is False:
            return Precision(torch.float32, "auto: the CPU has neither AMX nor AVX-512 BF16 (bf16 would be slower)")
        why = "no AMX but AVX-512 BF16" if native else "no AMX, and torch does not report AVX-512 BF16"
    else:
        why = "torch does not report AMX"
    ratio = bf16_speedup()
    if ratio >= PROBE_RATIO:
        return Precision(torch.bfloat16, f"auto: {why}, and a bf16 matmul timed {ratio:.1f}x faster than fp32")
    return Precision(torch.float32, f"auto: {why}, and a bf16 matmul timed only {ratio:.2f}x fp32")


def autocast(model) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to the model's compute precision (set by ``load_model``), or nothing for fp32."""
    dtype = getattr(model, "siftlm_compute_dtype", None)
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype)


def tag(model) -> str:
    """What a stored pass records about precision: the weights' dtype and, under autocast, the compute dtype (an fp32
    pass keeps the key it always had)."""
    weights = str(next(model.parameters()).dtype)
    compute = getattr(model, "siftlm_compute_dtype", None)
    if compute is None or compute == torch.float32:
        return weights
    return f"{weights}/autocast-{str(compute).removeprefix('torch.')}"

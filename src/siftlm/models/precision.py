"""Compute precision: bfloat16 where the processor runs it fast (CUDA GPUs that support it, CPUs with AMX, CPUs where
it measured fast), float32 elsewhere, decided once per machine and said out loud.

``bfloat16`` means: matrix products run in bf16 under ``torch.autocast``, everything that needs range or precision
stays in fp32: softmax statistics, losses and score arithmetic (the output layer's result is cast to fp32 before any
of them), and the optimizer's master weights. Frozen weights (a model only scored, or the base under a LoRA adapter)
are stored in bf16; trained weights (LoRA adapters, or every weight in full fine-tuning) stay fp32 and autocast casts
them per product: fp32 master weights, so small updates are not lost to bf16 rounding.

On CPUs the speed of bf16 depends on the processor, so ``auto`` decides from what the CPU has: AMX tiles (Intel
Sapphire Rapids and later: bf16 several times fp32) pick bf16; AVX-512 BF16 without AMX varies by processor (measured:
an AMD EPYC ran a 512-square bf16 matmul 2.4x faster than fp32 and siftlm's loss pass 1.9x, another machine with the
same flag ran the loss pass at 0.4-0.6x fp32), so timed matmuls decide; with neither, bf16 is emulated and 3-6x
slower, so fp32.

The timing is done once per machine, not per process: a single timing on a busy machine swings from 0.08x to 32x,
and since the precision is part of every store key, a process that decided differently would recompute cached
passes and could select other examples. The median of ``PROBE_SAMPLES`` timings is kept in siftlm's cache under a
key of the processor's model, its flags, the core count and the torch release, and every later ``auto`` reads it
(``siftlm models --probe`` measures again). Processes that measure at the same moment agree: the first to store its
decision wins and the others read it. ``$SIFTLM_AUTO_DTYPE`` pins ``auto`` without any timing.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch

from siftlm.assets import cache_dir
from siftlm.config import UsageError
from siftlm.files import atomic_write, create_once

CHOICES = ("auto", "float32", "bfloat16")
PROBE_RATIO = 1.5      # without a capability flag, bf16 must time at least this much faster than fp32 to be picked
PROBE_SAMPLES = 7      # timings whose median decides (each the best of 3 products)
DECISION_VERSION = 1   # bump when the probe changes, so kept decisions are measured again
PIN_ENV = "SIFTLM_AUTO_DTYPE"   # float32 | bfloat16: what auto means on this machine, no probe (CI, clusters)


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


def probe(samples: int = PROBE_SAMPLES) -> dict:
    """Time bf16 against fp32 ``samples`` times; the median ratio decides (one timing on a busy machine can be off by
    10x either way: measured 0.08x to 31.9x on one machine)."""
    ratios = [bf16_speedup() for _ in range(samples)]
    return {"ratios": [round(r, 4) for r in ratios], "median": float(statistics.median(ratios))}


def _cpu_info() -> tuple[str, list[str]]:
    """The processor's model name and its flags (Linux /proc/cpuinfo; the platform's words elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    return (name.group(1).strip() if name else platform.processor() or platform.machine(),
            sorted(flags.group(1).split()) if flags else [])


def machine() -> dict:
    """What a CPU precision decision holds for: the processor, its flags, the cores and the torch release."""
    name, flags = _cpu_info()
    return {"processor": name, "flags": hashlib.sha1(" ".join(flags).encode()).hexdigest()[:12],
            "cores": os.cpu_count(), "torch": torch.__version__, "version": DECISION_VERSION}


def decision_path() -> Path:
    key = hashlib.sha1(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "precision" / f"cpu-{key}.json"


def _store_first(path: Path, record: dict, *, replace: bool) -> dict:
    """Write ``record`` at ``path`` atomically (``siftlm.files``). Unless ``replace``, the first writer wins: a process
    that measured at the same time as another reads the other's decision instead of keeping its own, so they agree."""
    text = json.dumps(record, indent=2)
    if replace:
        with atomic_write(path) as tmp:
            tmp.write_text(text)
        return record
    kept = create_once(path, text)
    return record if kept == text else json.loads(kept)


def cpu_decision(*, refresh: bool = False) -> dict:
    """This machine's kept answer to "is bf16 worth it on the CPU": read from siftlm's cache, or measured once
    (median of ``PROBE_SAMPLES`` timings against ``PROBE_RATIO``) and kept there. ``refresh`` measures again and
    replaces it (``siftlm models --probe``)."""
    path = decision_path()
    unreadable = False                             # decided before the probe: a decision another process stores
    if not refresh and path.exists():              # while this one measures is read, never overwritten
        try:
            return {**json.loads(path.read_text()), "path": str(path), "new": False}
        except (OSError, json.JSONDecodeError):
            unreadable = True                      # measure again and replace it
    measured = probe()
    record = {"bf16": measured["median"] >= PROBE_RATIO, **measured, "threshold": PROBE_RATIO,
              "machine": machine(), "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        kept = _store_first(path, record, replace=refresh or unreadable)
    except OSError:                                # a read-only cache: this process's measurement, said so
        return {**record, "path": None, "new": True}
    return {**kept, "path": str(path), "new": kept is record}


def choose(asked: str = "auto", device: torch.device | str = "cpu") -> Precision:
    """The compute precision for ``device``: as ``asked``, or for ``auto``: ``$SIFTLM_AUTO_DTYPE`` when set; bf16 on
    CUDA devices that support it and on CPUs with AMX; fp32 on CPUs without AVX-512 BF16; otherwise this machine's
    kept decision (``cpu_decision``: measured once, median of several timings)."""
    if asked not in CHOICES:
        raise UsageError(f"unknown dtype {asked!r}; known: {', '.join(CHOICES)}")
    device = torch.device(device)
    if asked != "auto":
        return Precision(getattr(torch, asked), f"{asked} as asked")
    pinned = os.environ.get(PIN_ENV)
    if pinned:
        if pinned not in CHOICES[1:]:
            raise UsageError(f"{PIN_ENV}={pinned!r}: must be float32 or bfloat16")
        return Precision(getattr(torch, pinned), f"auto: {pinned}, pinned by {PIN_ENV}")
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
    d = cpu_decision()
    ratio = f"bf16 matmuls timed a median {d['median']:.2f}x fp32 over {len(d['ratios'])} runs"
    where = (f"measured now, kept in {d['path']}" if d["new"] else f"measured {d.get('measured_at', '')}, kept in "
             f"{d['path']}") if d["path"] else "measured now (the cache is not writable, so not kept)"
    words = f"auto: {why}; {ratio} ({where}; `siftlm models --probe` measures again)"
    return Precision(torch.bfloat16 if d["bf16"] else torch.float32, words)


def other_tags(model, compute: torch.dtype | None) -> list[str]:
    """The store tags (``tag``) the same weights have in the other precisions ``auto`` can pick: a pass stored under
    one of them may serve an ``auto`` run (``siftlm.signals.passes.run_pass``)."""
    mine = tag(model, compute)
    return [t for t in ("torch.float32", "torch.bfloat16/autocast-bfloat16", "torch.float32/autocast-bfloat16")
            if t != mine]


_COMPUTE: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar("siftlm_compute_dtype", default=None)


@contextlib.contextmanager
def computing(dtype: torch.dtype | None) -> Iterator[None]:
    """Matrix products inside run in ``dtype`` (``autocast``): set by whoever holds the model's handle (a pass, the
    training loop, generation) from the precision ``load_model`` chose; None or float32: no autocast."""
    token = _COMPUTE.set(dtype)
    try:
        yield
    finally:
        _COMPUTE.reset(token)


def autocast(model) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to the compute precision set by ``computing``, or nothing for fp32."""
    dtype = _COMPUTE.get()
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype)


def tag(model, compute: torch.dtype | None) -> str:
    """What a stored pass records about precision: the weights' dtype and, under autocast, the compute dtype (an fp32
    pass keeps the key it always had)."""
    weights = str(next(model.parameters()).dtype)
    if compute is None or compute == torch.float32:
        return weights
    return f"{weights}/autocast-{str(compute).removeprefix('torch.')}"

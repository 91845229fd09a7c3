"""``--compile auto|on|off``: the decoder's forward compiled by ``torch.compile`` (Inductor) for the passes that only
read the model (loss, uncond, lm-embed, pairs), with eager as the fallback whatever happens.

Where the time goes: in a bf16 forward of SmolLM2 on a CPU, matrix products are under half of it; the rest is
element-wise work (RMSNorm's fp32 round trip, SiLU, the residual adds, copies) that eager PyTorch runs one operator at a
time through memory. Inductor fuses those into a few loops. It costs a compilation first (tens of seconds to a minute
for a 135M model on a few CPU cores), so it pays only for a pass with enough tokens.

The rule of ``auto`` (``decide``): off where compiling cannot run (no C++ compiler for a CPU, no Triton for a GPU,
``torch.compile`` unsupported here); else on when the pass covers at least ``AUTO_MIN_TOKENS`` tokens for its device
type: 1,000,000 on a CPU (a ~1.3x faster bf16 forward at ~2,000-3,000 tok/s repays ~1 min of compiling from ~0.5M
tokens; twice that for margin), 5,000,000 on a GPU (a forward there is ~30x faster, the compilation is not); off
otherwise, and off for float32 on a CPU (there the forward is matrix products at ~2/3 of the matmul roofline, and
compiling measured 1.03x against ~2 min of compilation on a 2-core AMD EPYC).
``on`` compiles whenever it can; ``off`` never does. One line says what was chosen and why, like ``--dtype auto``.

Shapes: the token-budget batches (``siftlm.models.batching``) have a new (batch, length) shape almost every batch, so
the decoder is compiled with dynamic shapes (one graph for every batch) instead of once per shape; a batch of one
row runs it twice, because dynamo specialises a size of 1 and would compile a second graph for it.
Compiling reorders floating-point sums, nothing else: losses agree with eager to ~1e-6 in fp32 (tests/models/
test_compiled.py), so the setting is not part of any store key.

Whatever fails while compiling or running the compiled graph (no compiler, an unsupported operator, a dynamo error)
turns compilation off for that decoder in this process, with one line saying why; the batch runs eagerly. Never a
traceback.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import shutil
import weakref
from collections.abc import Iterator

import torch

from siftlm.config import UsageError, closest
from siftlm.progress import console

MODES = ("auto", "on", "off")
AUTO_MIN_TOKENS = {"cpu": 1_000_000, "cuda": 5_000_000}

_active: contextvars.ContextVar[bool] = contextvars.ContextVar("siftlm_compile", default=False)
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()    # decoder -> its compiled module
_failed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()      # decoder -> why compiling it failed
_said: set = set()


def say(line: str, key=None) -> None:
    """Print ``line`` once per process and ``key`` (default the line itself): passes over the same model repeat the
    same decision, said the first time only."""
    key = line if key is None else key
    if key not in _said:
        _said.add(key)
        console.print(line, highlight=False, soft_wrap=True)


def unavailable(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, or None when it can."""
    device = torch.device(device)
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return "torch.compile is not supported on this Python"
    except Exception as e:          # noqa: BLE001  (any import problem means: not here)
        return f"torch._dynamo does not import ({type(e).__name__})"
    if device.type == "cpu":
        cxx = os.environ.get("CXX")
        if not (cxx and shutil.which(cxx)) and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
            return "no C++ compiler (c++, g++ or clang++) for Inductor's CPU code"
        return None
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") else "no Triton for Inductor's GPU kernels"
    return f"not tried on {device.type}"


def decide(mode: str, device: torch.device | str, tokens: int, dtype: torch.dtype | None = None) -> tuple[bool, str]:
    """(compile?, the reason) for a pass of ``tokens`` tokens on ``device`` in ``dtype`` under ``--compile mode``."""
    if mode not in MODES:
        raise UsageError(f"unknown --compile {mode!r}{closest(mode, MODES)}; known: {', '.join(MODES)}")
    device = torch.device(device)
    if mode == "off":
        return False, "--compile off"
    why_not = unavailable(device)
    if why_not:
        return False, why_not if mode == "auto" else f"--compile on, but {why_not}: eager"
    if mode == "on":
        return True, "--compile on"
    if device.type == "cpu" and dtype == torch.float32:
        return False, ("auto: float32 on a CPU, where matrix products dominate the forward: compiling measured 1.03x "
                       "(docs/performance.md), never repaying its ~2 min")
    need = AUTO_MIN_TOKENS.get(device.type)
    if need is None:
        return False, f"auto: not tried on {device.type}"
    if tokens < need:
        return False, f"auto: {tokens:,} tokens in the pass, compiling repays from {need:,} on {device.type}"
    return True, f"auto: {tokens:,} tokens in the pass, at least {need:,} on {device.type}"


@contextlib.contextmanager
def compiling(enabled: bool) -> Iterator[None]:
    """Inside the block, ``decoder_forward`` runs decoders compiled (when ``enabled``) for work without gradients."""
    token = _active.set(bool(enabled))
    try:
        yield
    finally:
        _active.reset(token)


def active() -> bool:
    return _active.get()


def _compiled_of(decoder):
    c = _compiled.get(decoder)
    if c is None:
        c = _compiled[decoder] = torch.compile(decoder, dynamic=True)
    return c


def _fail(decoder, error: BaseException) -> None:
    text = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    what = text[0] if text else ""              # dynamo's last lines are advice on its settings: the first says what
    what = what if len(what) <= 200 else what[:197] + "..."
    _failed[decoder] = what
    _compiled.pop(decoder, None)
    say(f"compile: off, running eager ({type(error).__name__} while compiling{': ' + what if what else ''})")


def decoder_forward(decoder, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """``decoder(input_ids=..., attention_mask=..., use_cache=False)``, compiled inside ``compiling(True)`` when no
    gradient is needed (a training step or the grads pass stays eager), eager otherwise or after a failure."""
    if not _active.get() or torch.is_grad_enabled() or decoder in _failed:
        return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    rows = input_ids.shape[0]
    if rows == 1:                               # size 1 is specialised by dynamo: run the row twice, one graph for all
        input_ids, attention_mask = torch.cat([input_ids, input_ids]), torch.cat([attention_mask, attention_mask])
    try:
        out = _compiled_of(decoder)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except Exception as e:                      # noqa: BLE001  (the fallback is the point: eager always works)
        _fail(decoder, e)
        return decoder(input_ids=input_ids[:rows], attention_mask=attention_mask[:rows], use_cache=False)
    if rows == 1:
        out.last_hidden_state = out.last_hidden_state[:1]
    return out

"""A LoRA model evaluated at the base model's speed: the active adapters merged into the base weights for the length
of a pass, the exact unmerged weights put back afterwards.

Unmerged, every adapted linear layer runs three products per call (W z, A z, B (A z)) plus an add, and the small
rank-r products run far below the processor's speed: a pass over a LoRA model measured half the speed of the base
model's. Merged, the layer is one product with W + scale * B A, exactly the base model's cost. Passes only read the
model, so ``merged`` merges through peft (``LoraLayer.merge``: any variant it knows, DoRA included) after keeping a copy
of each base weight, and on the way out copies the kept weights back (bit for bit, into the same storage) and marks the
layers unmerged, instead of peft's ``unmerge`` (W + d - d is not W in floating point): training continues on the very
weights it left, and the adapters themselves are never written to.

What it computes is the adapted model's forward, so a pass keeps its store key: in fp32 merged and unmerged losses
agree to ~1e-6 (tests/models/test_merge.py). In bf16 the merged weight is rounded to bf16 once (W + scale * B A), where
the unmerged layer rounds W z and the adapter's output separately: the losses differ at bf16's own level (the test
bounds it), as two bf16 runs of the same weights on different kernels do.

Layers whose adapters are disabled (``PeftModel.disable_adapter()``: a DPO reference pass) or already merged are left
alone, so ``merged`` nests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def _lora_layers(model) -> list:
    """(layer, adapter names) of every LoRA layer of ``model`` that would run unmerged adapters."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    out = []
    for m in model.modules():
        if not isinstance(m, LoraLayer) or m.disable_adapters or m.merged:
            continue
        names = [a for a in m.active_adapters if a in m.lora_A or a in getattr(m, "lora_embedding_A", {})]
        if names:
            out.append((m, names))
    return out


def has_unmerged(model) -> bool:
    """Whether ``model`` runs LoRA adapters unmerged (what ``merged`` would change)."""
    return bool(_lora_layers(model))


@contextlib.contextmanager
def merged(model) -> Iterator[object]:
    """``model`` with its active LoRA adapters merged into the base weights inside the block; the base weights exactly
    as they were, and the adapters unmerged, after it (also when the block raises). A model without unmerged adapters
    (a plain model, a full fine-tune, adapters disabled or merged already) passes through unchanged."""
    layers = _lora_layers(model)
    kept: list[tuple[object, list[tuple[torch.Tensor, torch.Tensor]]]] = []
    try:
        with torch.no_grad():
            for layer, names in layers:
                base = layer.get_base_layer()
                tensors = [t for t in (getattr(base, "weight", None), getattr(base, "bias", None)) if t is not None]
                kept.append((layer, [(t, t.detach().clone()) for t in tensors]))
                layer.merge(adapter_names=names)
        yield model
    finally:
        with torch.no_grad():
            for layer, tensors in reversed(kept):
                for t, copy in tensors:
                    if t.data.shape == copy.shape and t.data.dtype == copy.dtype:
                        t.data.copy_(copy)
                    else:                       # a variant that replaced the tensor: put the original back
                        t.data = copy
                layer.merged_adapters.clear()

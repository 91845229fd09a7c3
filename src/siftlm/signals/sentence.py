"""Sentence embeddings with any sentence-transformers model (all-MiniLM-L6-v2 by default, as the
learning-percentage paper clusters with), batched over length-sorted texts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from siftlm.data import Example
from siftlm.errors import UsageError

PARTS = ("full", "prompt", "response")


def example_text(ex: Example, part: str = "full") -> str:
    """The text embedded for an example: the whole conversation (LP paper), its prompt, or its last response.

    Turns are joined by blank lines. A preference pair's prompt is its messages; "full"/"response" add the chosen.
    """
    if part not in PARTS:
        raise UsageError(f"unknown text part {part!r}; known: {PARTS}")
    msgs = list(ex.messages) + ([{"role": "assistant", "content": ex.chosen}] if ex.chosen is not None else [])
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=len(msgs))
    if part == "prompt":
        msgs = msgs[:last]
    elif part == "response":
        msgs = msgs[last:last + 1]
    return "\n\n".join(str(m["content"]) for m in msgs)


CPU_BATCH, GPU_BATCH = 8, 128   # all-MiniLM-L6-v2 on 2 CPU cores: 8 -> 47 ex/s, 1 -> 38, 64 -> 38 (bench/embed.py)


def sentence_embed(model, texts: list[str], *, batch_size: int | None = None, normalize: bool = True,
                   on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, D) float32 embeddings in input order; texts are sorted by length so each batch pads little.

    Default batch: 8 on CPU (larger batches of 256-token texts are memory-bound there), 128 on a GPU.
    """
    batch_size = batch_size or (CPU_BATCH if model.device.type == "cpu" else GPU_BATCH)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    out = np.zeros((len(texts), dim()), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        out[idx] = model.encode([texts[i] for i in idx], batch_size=batch_size, normalize_embeddings=normalize,
                                convert_to_numpy=True, show_progress_bar=False)
        if on_batch:
            on_batch(len(idx))
    return out

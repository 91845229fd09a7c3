"""Near-duplicate removal by cosine similarity of embeddings: walk the examples in order, drop any whose
similarity to an already kept example reaches the threshold, and record which kept example it duplicates.
With cluster labels, comparisons stay within each cluster (for large N)."""

from __future__ import annotations

import numpy as np


def dedup(features, ids, *, threshold: float = 0.95, labels=None) -> tuple[np.ndarray, dict[str, str]]:
    """Returns (kept positions in input order, {dropped id: id it duplicates})."""
    x = np.asarray(features, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    ids = list(ids)
    groups = [np.arange(len(x))] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    keep = np.zeros(len(x), dtype=bool)
    dropped: dict[str, str] = {}
    for g in groups:
        kept: list[int] = []
        for i in g:
            if kept:
                sims = x[kept] @ x[i]
                j = int(np.argmax(sims))
                if sims[j] >= threshold:
                    dropped[ids[i]] = ids[kept[j]]
                    continue
            kept.append(int(i))
            keep[i] = True
    return np.flatnonzero(keep), dropped

"""Perplexity baseline: P = exp(L(y|x)) under the base model. Keep highest by default (hardest)."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_float


def ppl(base_loss) -> np.ndarray:
    """exp(mean response NLL). Direction is a choice: the perplexity-pruning literature keeps the middle or
    the top; our default keeps the highest, override with ``--direction low``."""
    with np.errstate(over="ignore"):
        return np.exp(as_float("base_loss", base_loss))

"""Instruction-following difficulty (Li et al. 2024, Cherry LLM): IFD = P(y|x) / P(y). Keep highest."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_float, safe_divide


def ifd(base_loss, uncond_loss) -> np.ndarray:
    """Ratio of the response perplexity with the prompt to without it: exp(L(y|x)) / exp(L(y)).

    Near or above 1 means the prompt does not help predict the response. Cherry LLM keeps the highest
    IFD below 1; ``select`` can filter > 1 with a threshold. Computed as exp(L(y|x) - L(y)) with the
    same guard: non-finite inputs give NaN.
    """
    a, b = as_float("base_loss", base_loss), as_float("uncond_loss", uncond_loss)
    with np.errstate(over="ignore"):
        return safe_divide(np.exp(a), np.exp(b))[0]

"""Instruction-following difficulty (Li et al. 2024, Cherry LLM): IFD = P(y|x) / P(y). Keep highest, below 1."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_floats, safe_divide


def ifd(base_loss, uncond_loss, *, max_value: float | None = 1.0) -> np.ndarray:
    """Ratio of the response perplexity with the prompt to without it: exp(L(y|x)) / exp(L(y)).

    At or above 1 the prompt does not help predict the response; Cherry LLM keeps the highest IFD among the
    examples below 1, so values above ``max_value`` (default 1.0; None keeps all) become NaN, which is never
    selected and is counted in the summary's non-finite scores. Non-finite inputs also give NaN.
    """
    a, b = as_floats(base_loss=base_loss, uncond_loss=uncond_loss)
    with np.errstate(over="ignore"):
        out = safe_divide(np.exp(a), np.exp(b))[0]
    if max_value is not None:
        out[out > max_value] = np.nan
    return out

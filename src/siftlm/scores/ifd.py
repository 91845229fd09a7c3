"""Instruction-following difficulty (Li et al. 2024, Cherry LLM): IFD = s(A|Q) / s(A). Keep highest, below 1."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_floats, safe_divide


def ifd(base_loss, uncond_loss, *, max_value: float | None = 1.0) -> np.ndarray:
    """The ratio of the mean response losses with and without the prompt, s(A|Q) / s(A), as the paper and its
    released selection script define it (a ratio of losses, not of perplexities: the ranking differs).

    s(A|Q) is the base pass's mean response NLL; s(A) the response-only pass's, where the response follows only
    BOS and the template's response header (``siftlm.models.template.encode_response_only``; Cherry's script
    scores "### Response:" + answer). At or above 1 the prompt does not help predict the response; Cherry LLM keeps
    the highest IFD among the examples below 1, so values above ``max_value`` (default 1.0; None keeps all)
    become NaN, which is never selected and is counted in the summary's non-finite scores. Non-finite inputs
    and s(A) = 0 also give NaN. No exponentials are taken, so long or hard responses cannot overflow.
    """
    a, b = as_floats(base_loss=base_loss, uncond_loss=uncond_loss)
    out = safe_divide(a, b)[0]
    if max_value is not None:
        out[out > max_value] = np.nan
    return out

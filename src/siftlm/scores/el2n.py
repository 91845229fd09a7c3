"""EL2N (Paul et al. 2021), per token: mean over response tokens of ||softmax(logits) - onehot(y)||_2. Keep highest."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_float


def el2n(el2n_mean) -> np.ndarray:
    """The engine already averages the per-token error norm over response tokens (``el2n`` signal of the base
    pass, or of an early fine-tuning epoch as in the original paper); this function is the identity with checks."""
    return as_float("el2n", el2n_mean)

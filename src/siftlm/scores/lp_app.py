"""Approximate learning percentage (LP paper eq. 2): LP_app(i) = (P_{i-1} - P_i) / P_0. Keep lowest."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_matrix, safe_divide


def lp_app(ppl_trajectory, *, epoch: int = 1) -> np.ndarray:
    """``ppl_trajectory``: (N, k) perplexities P_0 .. P_{k-1}; needs only epochs up to ``epoch``
    (the paper's point: one epoch of training suffices for LP_app(1)). P_0 = 0 gives NaN."""
    p = as_matrix("ppl_trajectory", ppl_trajectory)
    if not 1 <= epoch < p.shape[1]:
        raise ValueError(f"LP_app({epoch}) needs perplexities P_0..P_{epoch}, got shape {p.shape}")
    return safe_divide(p[:, epoch - 1] - p[:, epoch], p[:, 0])[0]

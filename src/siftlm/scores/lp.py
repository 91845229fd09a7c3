"""Learning percentage (LP paper eq. 1): LP(i) = (P_{i-1} - P_i) / (P_0 - P_n). Keep lowest (hardest)."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_matrix, safe_divide


def lp(ppl_trajectory, *, epoch: int = 1) -> np.ndarray:
    """``ppl_trajectory``: (N, n+1) perplexities P_0 (before training) .. P_n (after epoch n).

    Share of the total perplexity drop that happened in epoch ``epoch``. Low LP(1) = learned late = hard.
    With n = 1, LP(1) is 1 for every example, so use at least 2 epochs. A zero total drop gives NaN.
    """
    p = as_matrix("ppl_trajectory", ppl_trajectory)
    n = p.shape[1] - 1
    if not 1 <= epoch <= n:
        raise ValueError(f"epoch must be in 1..{n}, got {epoch}")
    return safe_divide(p[:, epoch - 1] - p[:, epoch], p[:, 0] - p[:, n])[0]

"""Forgetting events (Toneva et al. 2019), adapted to LMs: count of evaluations where an example's response
token accuracy drops below its previous value. Keep highest."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_matrix


def forgetting(acc_trajectory) -> np.ndarray:
    """``acc_trajectory``: (N, n+1) token accuracies A_0..A_n. Returns #{i : A_i < A_{i-1}} per example."""
    a = as_matrix("acc_trajectory", acc_trajectory)
    return (np.diff(a, axis=1) < 0).sum(axis=1).astype(np.float64)

"""Token-count baselines ("longest responses", Zhao et al. 2024). Keep highest."""

from __future__ import annotations

import numpy as np


def tokens_in(n_prompt) -> np.ndarray:
    """Prompt tokens (chat template included)."""
    return np.asarray(n_prompt, dtype=np.float64)


def tokens_out(n_response) -> np.ndarray:
    """Response tokens (every assistant turn)."""
    return np.asarray(n_response, dtype=np.float64)


def tokens_total(n_prompt, n_response) -> np.ndarray:
    """Prompt plus response tokens."""
    return np.asarray(n_prompt, dtype=np.float64) + np.asarray(n_response, dtype=np.float64)

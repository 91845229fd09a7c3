"""Token-count baselines ("longest responses", Zhao et al. 2024). Keep highest."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_float, as_floats


def tokens_in(n_prompt) -> np.ndarray:
    """Prompt tokens (chat template included)."""
    return as_float("n_prompt", n_prompt)


def tokens_out(n_response) -> np.ndarray:
    """Response tokens (every assistant turn)."""
    return as_float("n_response", n_response)


def tokens_total(n_prompt, n_response) -> np.ndarray:
    """Prompt plus response tokens."""
    p, r = as_floats(n_prompt=n_prompt, n_response=n_response)
    return p + r

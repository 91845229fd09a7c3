"""LLM rating (AlpaGasus, Chen et al. 2024): a judge rates each (instruction, response) from 0 to 5; the score is the
rating (``siftlm rate``). Keep highest. Unrated examples (the judge's reply could not be parsed) are NaN: never
selected, counted."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_float


def rating(values) -> np.ndarray:
    """The judge's ratings, as given (checked to be one per example)."""
    return as_float("rating", values)

"""The random baseline: a seeded uniform sample of the budget."""

from __future__ import annotations

import numpy as np
import pandas as pd

from siftlm.backends import Executor
from siftlm.config import SelectConfig
from siftlm.select.picked import CannotSelect, Picked
from siftlm.select.topk import budget_count


def random_subset(n: int, k: int, *, seed: int = 0) -> np.ndarray:
    """Uniform random positions, seeded, in increasing order: the first ``k`` of one seeded permutation, so a larger
    budget holds every pick of a smaller one (what a token budget's search relies on)."""
    if not 0 <= k <= n:
        raise CannotSelect(f"budget {k} must be between 0 and {n}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def pick(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    n = len(table)
    k = budget_count(cfg.budget, n)
    pos = random_subset(n, k, seed=cfg.seed)
    return Picked(pos, [f"uniform random, seed {cfg.seed}: {k} of {n}"] * k, np.full(k, np.nan))

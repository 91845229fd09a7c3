"""The random baseline: seeded, exact budget, uniform."""

import numpy as np
import pandas as pd

from siftlm.config import SelectConfig
from siftlm.select.sample import pick, random_subset


def test_random_subset_is_seeded_exact_and_uniform():
    assert random_subset(100, 10, seed=3).tolist() == random_subset(100, 10, seed=3).tolist()
    assert random_subset(100, 10, seed=3).tolist() != random_subset(100, 10, seed=4).tolist()
    counts = np.bincount(np.concatenate([random_subset(20, 5, seed=s) for s in range(4000)]), minlength=20)
    assert counts.sum() == 20_000 and abs(counts / 4000 - 0.25).max() < 0.03   # each row picked with p = 5/20


def test_pick_random_keeps_the_budget_with_no_score():
    table = pd.DataFrame({"id": [f"e{i}" for i in range(30)], "davir": np.arange(30.0)})
    p = pick(table, None, SelectConfig(method="random", budget=0.2, seed=1))
    assert len(p.positions) == 6 and np.isnan(p.score).all() and p.reasons[0] == "uniform random, seed 1: 6 of 30"

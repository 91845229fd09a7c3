"""Near-duplicate removal: planted duplicates, walk order and the budget."""

import numpy as np
import pandas as pd

from siftlm.config import SelectConfig
from siftlm.select.cluster import kmeans
from siftlm.select.dedup import dedup, pick


def test_dedup_drops_planted_duplicates_and_nothing_else():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((30, 32))
    dups = base[[3, 7, 7]] + 1e-4 * rng.standard_normal((3, 32))   # near copies of 3 and 7 (twice)
    x = np.vstack([base, dups])
    ids = [f"e{i}" for i in range(33)]
    kept, dropped = dedup(x, ids, threshold=0.99)
    assert dropped == {"e30": "e3", "e31": "e7", "e32": "e7"}
    assert kept.tolist() == list(range(30))
    labels = kmeans(x, n_clusters=3)
    kept2, dropped2 = dedup(x, ids, threshold=0.99, labels=labels)
    assert dropped2 == dropped and kept2.tolist() == kept.tolist()


def _planted():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((12, 16))
    x = np.vstack([base, base[[2, 5]] * 2.0])                # rows 12, 13 duplicate rows 2 and 5
    table = pd.DataFrame({"id": [f"e{i:02d}" for i in range(14)], "s": np.arange(14.0)})
    return table, x


def test_dedup_walks_best_first_by_a_score_so_the_better_copy_stays():
    table, x = _planted()
    picked = pick(table, x, SelectConfig(method="dedup", by="s"))             # highest s first: rows 13, 12, ... 0
    kept = picked.positions.tolist()
    assert kept == [13, 12, 11, 10, 9, 8, 7, 6, 4, 3, 1, 0]                   # 5 and 2 are the duplicates now
    assert picked.columns["duplicate_of"][5] == "e13" and picked.columns["duplicate_of"][2] == "e12"
    plain = pick(table, x, SelectConfig(method="dedup"))                      # input order: the first copy stays
    assert plain.positions.tolist() == list(range(12))
    assert plain.columns["duplicate_of"][12] == "e02" and plain.columns["duplicate_of"][13] == "e05"


def test_dedup_honours_the_budget():
    table, x = _planted()
    assert pick(table, x, SelectConfig(method="dedup", budget=5)).positions.tolist() == [0, 1, 2, 3, 4]
    best = pick(table, x, SelectConfig(method="dedup", by="s", budget=0.25))   # 0.25 x 14 = 3.5 -> 4
    assert best.positions.tolist() == [13, 12, 11, 10]
    assert best.columns["duplicate_of"][5] == "e13"                          # dropped rows are recorded all the same

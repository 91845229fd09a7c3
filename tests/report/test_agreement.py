"""Ranking agreement against scipy and hand-counted overlaps."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from siftlm.report.agreement import agreement, write


def test_agreement_by_hand(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"e{i:03d}" for i in range(100)]
    s = rng.random(100)
    a = pd.DataFrame({"id": ids, "davir": s})
    b = pd.DataFrame({"id": ids[::-1] + ["extra"], "davir": np.r_[(s + 0.3 * rng.random(100))[::-1], 0.5]})
    res = agreement(a, b, "davir", budgets=(0.1, 10))
    joined = a.merge(b, on="id")
    assert res["n"] == 100 and res["only_second"] == 1
    assert res["kendall"]["value"] == pytest.approx(stats.kendalltau(joined["davir_x"], joined["davir_y"]).statistic)
    top_a = set(joined.nlargest(10, "davir_x")["id"])
    top_b = set(joined.nlargest(10, "davir_y")["id"])
    o = res["overlap"][0]
    assert o["k"] == 10 and o["common"] == len(top_a & top_b)
    assert o["iou"] == pytest.approx(len(top_a & top_b) / len(top_a | top_b))
    assert res["overlap"][1]["k"] == 10 and o["random_share"] == pytest.approx(0.1)
    # two scores of one model, of opposite directions: lp (low) against davir (high) compares like with like
    one = pd.DataFrame({"id": ids, "lp": -s, "davir": s})
    same = agreement(one, one, "lp", "davir")
    assert same["kendall"]["value"] == pytest.approx(1.0) and same["overlap"][0]["share"] == 1.0
    paths = write(res, ("a", "b"), tmp_path)
    assert paths["html"].read_text().count("data:image/png;base64,") == 1

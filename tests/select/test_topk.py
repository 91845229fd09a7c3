import numpy as np
import pytest

from siftlm.select.topk import budget_count, rank, topk


def test_topk_exact_budget_and_tie_break_by_id():
    ids = ["d", "b", "a", "c", "e"]
    s = [1.0, 3.0, 3.0, 2.0, np.nan]
    assert list(topk(ids, s, budget=2)) == [2, 1]          # a then b (tie on 3.0, by id)
    assert list(topk(ids, s, budget=3, direction="low")) == [0, 3, 2]
    np.testing.assert_array_equal(rank(ids, s), [4, 2, 1, 3, 0])  # NaN gets no rank
    with pytest.raises(ValueError, match="exceeds the 4 examples with a finite score"):
        topk(ids, s, budget=5)


def test_budget_as_fraction_or_count():
    assert budget_count(0.1, 128) == 13 and budget_count(0.1, 125) == 13 and budget_count(0.001, 10) == 1
    assert budget_count(7, 100) == 7
    with pytest.raises(ValueError):
        budget_count(2.5, 100)
    with pytest.raises(ValueError):
        budget_count(0, 100)


def test_same_inputs_same_selection():
    rng = np.random.default_rng(0)
    ids = [f"x{i}" for i in range(1000)]
    s = rng.integers(0, 5, size=1000).astype(float)  # many ties
    a = topk(ids, s, budget=100)
    b = topk(list(reversed(ids)), s[::-1], budget=100)
    assert sorted(ids[i] for i in a) == sorted(list(reversed(ids))[i] for i in b)


def test_pick_names_the_score_and_its_signals():
    import pandas as pd

    from siftlm.config import SelectConfig
    from siftlm.select.topk import pick

    t = pd.DataFrame({"id": ["a", "b", "c"], "base_loss": [2.0, 4.0, 1.0], "ref_loss": [1.0, 1.0, 0.9]})
    t["davir"] = (t["base_loss"] - t["ref_loss"]) / t["base_loss"]
    p = pick(t, None, SelectConfig(by="davir", budget=2))
    assert p.positions.tolist() == [1, 0] and p.score.tolist() == [0.75, 0.5]
    assert p.reasons[0] == "davir=0.75 (base_loss=4, ref_loss=1): rank 1 of 3, top 2 by highest davir"
    low = pick(t, None, SelectConfig(by="davir", budget=1, direction="low"))
    assert low.positions.tolist() == [2] and "by lowest davir" in low.reasons[0]


def test_a_budget_is_a_count_when_written_as_an_integer_and_a_fraction_otherwise():
    from siftlm.config import UsageError, parse_number

    assert budget_count(parse_number("1"), 50) == 1 and budget_count(parse_number("1.0"), 50) == 50
    assert budget_count(parse_number("10"), 50) == 10 and budget_count(parse_number("0.1"), 50) == 5
    assert budget_count(parse_number("1e-1"), 50) == 5 and budget_count(12.0, 50) == 12     # an old config's float
    with pytest.raises(UsageError, match="whole number"):
        budget_count(2.5, 50)
    with pytest.raises(UsageError, match="positive"):
        budget_count(-1, 50)
    with pytest.raises(UsageError, match="not a number"):
        parse_number("ten")

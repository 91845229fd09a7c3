"""The registry: directions, missing signals, add_scores over a signals table, and the inputs a reason names."""

import numpy as np
import pandas as pd
import pytest

from siftlm import scores
from siftlm.scores import add_scores, direction, inputs_of


def test_registry_names_missing_signals():
    with pytest.raises(KeyError, match="needs signals"):
        scores.compute("davir", {"base_loss": np.ones(2)})
    with pytest.raises(KeyError, match="unknown score"):
        scores.compute("nope", {})
    assert {d for _, _, d in scores.SCORES.values()} <= {"high", "low"}
    assert scores.SCORES["lp"][2] == "low" and scores.SCORES["davir"][2] == "high"


def test_direction_uses_the_registry_unless_given():
    assert direction("lp") == "low" and direction("davir") == "high" and direction("some_column") == "high"
    assert direction("lp", "high") == "high"
    with pytest.raises(ValueError, match="direction must be"):
        direction("lp", "up")


def test_add_scores_computes_what_the_signals_allow_and_counts_non_finite():
    t = pd.DataFrame({"id": ["a", "b", "c"], "n_prompt": [3, 4, 5], "n_response": [5, 6, 7],
                      "base_loss": [2.0, 0.0, 1.0], "ref_loss": [1.0, 0.0, 0.5],
                      "ppl_0": [9.0, 8.0, 7.0], "ppl_1": [5.0, 8.0, 3.0], "ppl_2": [4.0, 8.0, 2.0]})
    out, guarded = add_scores(t)
    np.testing.assert_allclose(out["davir"], [0.5, np.nan, 0.5])
    np.testing.assert_allclose(out["lp"], [4 / 5, np.nan, 4 / 5])           # (P0 - P1) / (P0 - P2)
    np.testing.assert_allclose(out["tokens_total"], [8, 10, 12])
    assert guarded["davir"] == 1 and guarded["lp"] == 1 and "ifd" not in out and "forgetting" not in out
    out2, _ = add_scores(t, lp_epoch=2)
    np.testing.assert_allclose(out2["lp"], [1 / 5, np.nan, 1 / 5])
    with pytest.raises(KeyError, match="needs signals"):
        add_scores(t, ["ifd"])


def test_inputs_of_expand_trajectories():
    t = pd.DataFrame({"id": ["a"], "base_loss": [1.0], "ref_loss": [0.5], "ppl_1": [2.0], "ppl_0": [3.0]})
    assert inputs_of("davir", t) == ["base_loss", "ref_loss"]
    assert inputs_of("lp", t) == ["ppl_0", "ppl_1"]
    assert inputs_of("not_a_score", t) == []

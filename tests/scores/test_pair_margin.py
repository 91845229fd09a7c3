"""Pair margins: vanilla DPO's and DavIR-DPO's normalised implicit-reward margins by hand."""

import numpy as np
import pytest
import torch

from siftlm.scores.pair_margin import MIN_REF_NATS, davir_log_ratio, davir_margin, dpo_margin


def test_margins_by_hand():
    # chosen: (-10 + 20) / 20 = 0.5; rejected: (-30 + 15) / 15 = -1
    assert davir_margin([-10], [-30], [-20], [-15])[0] == pytest.approx(1.5)
    assert dpo_margin([-10], [-30], [-20], [-15])[0] == pytest.approx(25)


def test_one_floor_rule_for_numpy_and_torch():
    ref = np.array([-20.0, -1e-6, 0.0])
    want = np.array([(-10 + 20) / 20, (-1 + 1e-6) / MIN_REF_NATS, -1 / MIN_REF_NATS])
    np.testing.assert_allclose(davir_log_ratio(np.array([-10.0, -1.0, -1.0]), ref), want)
    np.testing.assert_allclose(davir_log_ratio(torch.tensor([-10.0, -1.0, -1.0], dtype=torch.float64),
                                               torch.tensor(ref)).numpy(), want)
    assert np.isfinite(davir_margin([-1.0], [-2.0], [0.0], [-3.0])).all()

"""LP and LP_app (learning-percentage eq. 1, 2) on a synthetic trajectory computed by hand."""

import numpy as np
import pytest

from siftlm.scores import lp, lp_app


def test_lp_and_lp_app_match_the_paper_on_a_synthetic_trajectory():
    # P_0 .. P_3 for two examples
    p = np.array([[10.0, 6.0, 3.0, 2.0],
                  [8.0, 7.5, 4.0, 4.0]])
    # LP(1) = (P0 - P1) / (P0 - P3)
    np.testing.assert_allclose(lp(p, epoch=1), [4 / 8, 0.5 / 4])
    np.testing.assert_allclose(lp(p, epoch=2), [3 / 8, 3.5 / 4])
    # LP_app(1) = (P0 - P1) / P0
    np.testing.assert_allclose(lp_app(p, epoch=1), [0.4, 0.0625])
    np.testing.assert_allclose(lp_app(p, epoch=3), [1 / 10, 0.0])
    # LP(i) over all epochs sums to 1
    np.testing.assert_allclose(sum(lp(p, epoch=i) for i in (1, 2, 3)), [1.0, 1.0])
    # one epoch: LP(1) is 1 for everyone (why the demo trains two)
    np.testing.assert_allclose(lp(p[:, :2]), [1.0, 1.0])
    assert np.isnan(lp(np.array([[3.0, 3.0, 3.0]])))[0]
    with pytest.raises(ValueError):
        lp(p, epoch=4)


def test_lp_needs_a_trajectory_matrix():
    with pytest.raises(ValueError, match="signal 'ppl_trajectory' must be"):
        lp(np.ones(4))
    with pytest.raises(ValueError, match=r"LP_app\(2\) needs perplexities P_0..P_2"):
        lp_app(np.ones((3, 2)), epoch=2)

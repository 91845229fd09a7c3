"""Every score against hand-computed numbers from the papers' formulas."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from siftlm import scores
from siftlm.scores import davir, el2n, forgetting, ifd, lp, lp_app, ppl, rho, tokens_in, tokens_out, tokens_total
from siftlm.select.topk import rank


def test_rho_and_davir_by_hand():
    base, ref = np.array([2.0, 1.0, 4.0]), np.array([1.5, 0.25, 3.0])
    np.testing.assert_allclose(rho(base, ref), [0.5, 0.75, 1.0])
    np.testing.assert_allclose(davir(base, ref), [0.25, 0.75, 0.25])
    np.testing.assert_allclose(davir(base, ref, denominator="ref"), [1 / 3, 3.0, 1 / 3])


def test_davir_guards_zero_and_non_finite_denominators():
    out = davir([0.0, np.inf, 2.0, np.nan], [0.0, 1.0, 1.0, 1.0])
    assert np.isnan(out[[0, 1, 3]]).all() and out[2] == 0.5
    with pytest.raises(ValueError):
        davir([1.0], [1.0], denominator="x")


@given(st.lists(st.tuples(st.floats(0.01, 20), st.floats(0.01, 20)), min_size=2, max_size=50))
def test_davir_denominator_gives_same_ranking(pairs):
    """DavIR appendix C: normalising by L_base or L_ref gives the same order."""
    base, ref = np.array(pairs).T
    ids = [f"{i:03d}" for i in range(len(base))]
    a, b = davir(base, ref), davir(base, ref, denominator="ref")
    # same order up to exact ties in the ratio L_ref / L_base
    ratio = ref / base
    ra, rb = rank(ids, a), rank(ids, b)
    order = np.argsort(ra)
    assert np.all(np.diff(ratio[order]) >= -1e-12)
    order = np.argsort(rb)
    assert np.all(np.diff(ratio[order]) >= -1e-12)


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


def test_ppl_ifd_el2n_forgetting_tokens_by_hand():
    np.testing.assert_allclose(ppl([0.0, np.log(4.0)]), [1.0, 4.0])
    np.testing.assert_allclose(ifd([np.log(2.0)], [np.log(8.0)]), [0.25])  # P(y|x)=2, P(y)=8
    # above 1 the prompt does not help: excluded (NaN) as in Cherry LLM, unless asked to keep
    assert np.isnan(ifd([np.log(8.0)], [np.log(2.0)]))[0]
    np.testing.assert_allclose(ifd([np.log(8.0)], [np.log(2.0)], max_value=None), [4.0])
    np.testing.assert_allclose(el2n([0.3]), [0.3])
    acc = np.array([[0.5, 0.6, 0.4, 0.7, 0.2], [0.1, 0.2, 0.3, 0.3, 0.9]])
    np.testing.assert_allclose(forgetting(acc), [2, 0])
    np.testing.assert_allclose(tokens_in([3, 4]), [3, 4])
    np.testing.assert_allclose(tokens_out([5, 6]), [5, 6])
    np.testing.assert_allclose(tokens_total([3, 4], [5, 6]), [8, 10])


def test_registry_names_missing_signals():
    with pytest.raises(KeyError, match="needs signals"):
        scores.compute("davir", {"base_loss": np.ones(2)})
    with pytest.raises(KeyError, match="unknown score"):
        scores.compute("nope", {})
    assert {d for _, _, d in scores.SCORES.values()} <= {"high", "low"}
    assert scores.SCORES["lp"][2] == "low" and scores.SCORES["davir"][2] == "high"

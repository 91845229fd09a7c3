"""DavIR and RHO-LM (DavIR eq. 1, 3) against hand-computed numbers, and appendix C's ranking equivalence."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from siftlm.scores import davir, rho
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


def test_shapes_that_would_broadcast_are_refused_naming_the_signal():
    with pytest.raises(ValueError, match="signal 'base_loss' must be one value per example"):
        rho(np.ones((5, 1)), np.ones(5))                    # would silently broadcast to (5, 5)
    with pytest.raises(ValueError, match="different lengths"):
        davir(np.ones(4), np.ones(5))

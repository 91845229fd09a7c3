"""The baseline scores (perplexity, IFD, EL2N, forgetting, token counts, gradient norm) by hand."""

import numpy as np

from siftlm.scores import el2n, forgetting, grad_norm, ifd, ppl, tokens_in, tokens_out, tokens_total


def test_ppl_ifd_el2n_forgetting_tokens_by_hand():
    np.testing.assert_allclose(ppl([0.0, np.log(4.0)]), [1.0, 4.0])
    np.testing.assert_allclose(ifd([1.5], [2.0]), [0.75])                   # s(A|Q) / s(A): losses, not perplexities
    # above 1 the prompt does not help: excluded (NaN) as in Cherry LLM, unless asked to keep
    assert np.isnan(ifd([3.0], [2.0]))[0]
    np.testing.assert_allclose(ifd([3.0], [2.0], max_value=None), [1.5])
    # no overflow where exp(L) would: perplexities of e^800 and e^1000 are inf in float64, their losses are fine
    np.testing.assert_allclose(ifd([800.0, 1.0], [1000.0, 0.0]), [0.8, np.nan])
    np.testing.assert_allclose(el2n([0.3]), [0.3])
    acc = np.array([[0.5, 0.6, 0.4, 0.7, 0.2], [0.1, 0.2, 0.3, 0.3, 0.9]])
    np.testing.assert_allclose(forgetting(acc), [2, 0])
    np.testing.assert_allclose(tokens_in([3, 4]), [3, 4])
    np.testing.assert_allclose(tokens_out([5, 6]), [5, 6])
    np.testing.assert_allclose(tokens_total([3, 4], [5, 6]), [8, 10])
    np.testing.assert_allclose(grad_norm([2.5]), [2.5])

"""Length correlations (DavIR Tables 1-2) against numpy's own Pearson on hand-made columns."""

import numpy as np
import pandas as pd
import pytest

from siftlm.stats import finite_mean, length_correlations


def test_length_correlations_by_hand():
    n_prompt, n_resp = np.array([1, 2, 3, 4, 5]), np.array([10, 20, 30, 40, 60])
    loss = np.array([3.0, 2.5, 2.6, 1.0, np.nan])                       # NaN rows are left out
    t = pd.DataFrame({"n_prompt": n_prompt, "n_response": n_resp, "base_loss": loss, "davir": -2.0 * n_resp})
    res = length_correlations(t)
    ok = np.isfinite(loss)
    want = np.corrcoef(loss[ok], (n_prompt + n_resp)[ok])[0, 1]
    assert res["base_loss~tokens_total"]["pearson"] == pytest.approx(want, abs=1e-12)
    assert res["davir~n_response"]["pearson"] == pytest.approx(-1.0)
    assert res["davir~n_response"]["spearman"] == pytest.approx(-1.0)
    assert "rho~tokens_total" not in res                                   # no column, no row
    assert length_correlations(t.assign(base_loss=1.0)).get("base_loss~tokens_total") is None   # constant


def test_finite_mean():
    assert finite_mean([1.0, np.nan, 3.0, np.inf]) == 2.0 and finite_mean([np.nan]) is None

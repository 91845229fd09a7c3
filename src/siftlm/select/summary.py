"""What a finished selection looks like in numbers: the threshold and how the selected scores compare with all."""

from __future__ import annotations

import numpy as np


def score_summary(res) -> dict[str, str]:
    """For a ``Selected`` whose method ranks by a score: the threshold (the last selected value) and the score's
    median and range, selected against all; empty when the selection used no score column."""
    by = res.by
    t = res.table
    if not by or by not in t:
        return {}
    values = t[by].to_numpy(dtype=np.float64)
    sel = t["selected"].to_numpy(bool)
    ok = np.isfinite(values)
    last = t.loc[t["rank"] == len(res.selection), by]
    out = {"score": by}
    if len(last):
        out["threshold (last selected)"] = f"{float(last.iloc[0]):.4g}"

    def describe(v):
        return f"{np.median(v):.4g} [{v.min():.4g}, {v.max():.4g}]" if len(v) else "-"
    out["median [min, max], selected"] = describe(values[sel & ok])
    out["median [min, max], all"] = describe(values[ok])
    return out

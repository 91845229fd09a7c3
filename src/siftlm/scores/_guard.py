"""Shared input checks for score functions: scores are plain numpy over precomputed signals."""

from __future__ import annotations

import numpy as np


def as_float(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = a[None]
    return a


def safe_divide(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, int]:
    """num / den with NaN where den is zero or either side is non-finite; returns (values, n_guarded).

    NaN scores are never selected (selection puts them last) and are counted in the summary.
    """
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    ok = np.isfinite(num) & np.isfinite(den) & (den != 0)
    out = np.full(num.shape, np.nan)
    out[ok] = num[ok] / den[ok]
    return out, int((~ok).sum())

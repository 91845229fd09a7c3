"""Shared input checks for score functions: scores are plain numpy over precomputed signals."""

from __future__ import annotations

import numpy as np


def as_float(name: str, x) -> np.ndarray:
    """Signal ``name`` as a 1-D float64 array (a scalar becomes length 1); any other shape is a ValueError
    naming the signal, so an (N, 1) column never broadcasts against an (N,) one."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = a[None]
    if a.ndim != 1:
        raise ValueError(f"signal {name!r} must be one value per example (1-D), got shape {a.shape}")
    return a


def as_floats(**signals) -> list[np.ndarray]:
    """Several 1-D signals of equal length (``as_float`` each); unequal lengths are a ValueError naming them."""
    arrays = [as_float(name, x) for name, x in signals.items()]
    lengths = {name: len(a) for name, a in zip(signals, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"signals have different lengths: {lengths}")
    return arrays


def as_matrix(name: str, x, *, min_cols: int = 2) -> np.ndarray:
    """A trajectory signal (N, n+1) as float64 with at least ``min_cols`` columns, else a ValueError naming it."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < min_cols:
        raise ValueError(f"signal {name!r} must be (N, n+1) with n+1 >= {min_cols}, got shape {a.shape}")
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

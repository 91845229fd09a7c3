"""DavIR learnability (DavIR eq. 3): S = (L_base - L_ref) / L_base. Keep highest."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_floats, safe_divide


def davir(base_loss, ref_loss, *, denominator: str = "base") -> np.ndarray:
    """Relative loss reduction (L_base - L_ref) / L_den, L_den = L_base (default) or L_ref.

    Both denominators give the same ranking when losses are positive (DavIR appendix C):
    (L_b - L_r)/L_b = 1 - L_r/L_b and (L_b - L_r)/L_r = L_b/L_r - 1 are both increasing in L_b/L_r.
    A zero or non-finite denominator gives NaN (counted by ``safe_divide``'s caller, never selected).
    """
    b, r = as_floats(base_loss=base_loss, ref_loss=ref_loss)
    if denominator not in ("base", "ref"):
        raise ValueError(f"denominator must be 'base' or 'ref', got {denominator!r}")
    return safe_divide(b - r, b if denominator == "base" else r)[0]


def davir_epoch1(ppl_trajectory) -> np.ndarray:
    """DavIR with the reference after one epoch instead of the last: (L_0 - L_1) / L_0, L_i = log P_i from the
    trajectory (ours: a remedy for small pools, where the last epoch's reference has memorised short answers)."""
    p = np.asarray(ppl_trajectory, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"davir_e1 needs the trajectory P_0, P_1 (N, >= 2), got shape {p.shape}")
    return davir(np.log(p[:, 0]), np.log(p[:, 1]))

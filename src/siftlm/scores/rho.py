"""RHO-LM (DavIR eq. 1): S = L_base(y|x) - L_ref(y|x). Keep highest."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_floats


def rho(base_loss, ref_loss) -> np.ndarray:
    """Reducible holdout loss for LMs: mean response NLL under the base model minus under the reference
    model (the base fine-tuned on the full set). Higher = more learnable. Non-finite inputs give NaN."""
    b, r = as_floats(base_loss=base_loss, ref_loss=ref_loss)
    return b - r

"""Gradient norm ||grad l|| (the DPP paper's baseline, after Paul et al. 2021's GraNd): the L2 norm of the
per-example LoRA-B gradient of the mean response loss before projection (``siftlm signals --pass grads``).
Keep highest."""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_float


def grad_norm(norm) -> np.ndarray:
    """The grads pass computes the norm exactly; this is the identity with the shared finiteness checks."""
    return as_float("grad_norm", norm)

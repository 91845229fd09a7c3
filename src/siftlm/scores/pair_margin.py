"""Preference-pair scores from a policy and its reference (``siftlm signals --pass pairs --adapter``).

``dpo_margin``: the implicit-reward margin of vanilla DPO, [log pi/pi_ref](chosen) - [log pi/pi_ref](rejected)
(beta omitted: it does not change the order). ``davir_margin``: the same with each log-ratio divided by
|log pi_ref| of its response (DavIR-DPO, eq. 4), which removes most of the dependence on response length.
Keep highest: the pairs whose preference the policy learned most.
"""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_float


def dpo_margin(pc, pr, rc, rr) -> np.ndarray:
    pc, pr, rc, rr = (as_float(n, v) for n, v in zip(("pc", "pr", "rc", "rr"), (pc, pr, rc, rr), strict=True))
    return (pc - rc) - (pr - rr)


def davir_margin(pc, pr, rc, rr) -> np.ndarray:
    pc, pr, rc, rr = (as_float(n, v) for n, v in zip(("pc", "pr", "rc", "rr"), (pc, pr, rc, rr), strict=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (pc - rc) / np.abs(rc) - (pr - rr) / np.abs(rr)
    return np.where(np.isfinite(out), out, np.nan)

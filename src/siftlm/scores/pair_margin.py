"""Preference-pair scores from a policy and its reference (``siftlm signals --pass pairs --adapter``).

``dpo_margin``: the implicit-reward margin of vanilla DPO, [log pi/pi_ref](chosen) - [log pi/pi_ref](rejected)
(beta omitted: it does not change the order). ``davir_margin``: the same with each log-ratio divided by
|log pi_ref| of its response (DavIR-DPO, eq. 4), which removes most of the dependence on response length.
Keep highest: the pairs whose preference the policy learned most.

``davir_log_ratio`` is the one place the DavIR-DPO normalisation is defined; the DPO trainer and the
per-pair objectives use it too (on torch tensors: it only needs ``abs`` and ``.clip``).
"""

from __future__ import annotations

import numpy as np

from siftlm.scores._guard import as_floats

# |log pi_ref(y|x)| is floored here (ours, not the paper's): a near-certain response (log pi_ref ~ 0) must not
# divide by ~0. 1e-3 nats is far below any real response's log-likelihood, so it only guards degenerate pairs.
MIN_REF_NATS = 1e-3


def davir_log_ratio(logp, ref_logp):
    """(log pi(y|x) - log pi_ref(y|x)) / max(|log pi_ref(y|x)|, MIN_REF_NATS), for numpy arrays or torch tensors."""
    return (logp - ref_logp) / abs(ref_logp).clip(min=MIN_REF_NATS)


def dpo_margin(pc, pr, rc, rr) -> np.ndarray:
    pc, pr, rc, rr = as_floats(policy_chosen_logp=pc, policy_rejected_logp=pr, ref_chosen_logp=rc, ref_rejected_logp=rr)
    return (pc - rc) - (pr - rr)


def davir_margin(pc, pr, rc, rr) -> np.ndarray:
    pc, pr, rc, rr = as_floats(policy_chosen_logp=pc, policy_rejected_logp=pr, ref_chosen_logp=rc, ref_rejected_logp=rr)
    out = davir_log_ratio(pc, rc) - davir_log_ratio(pr, rr)
    return np.where(np.isfinite(out), out, np.nan)

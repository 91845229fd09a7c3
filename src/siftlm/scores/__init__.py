"""Scores: pure functions of stored signals. ``SCORES`` maps name -> (function, signal columns, direction).

Signal columns are columns of the signals table (``siftlm.pipeline.signals_table``):
``base_loss``, ``ref_loss``, ``uncond_loss``, ``base_el2n``, ``n_prompt``, ``n_response``, ``grad_norm`` (grads pass), and the
trajectory matrices ``ppl_trajectory`` (N, n+1) and ``acc_trajectory`` (N, n+1).
Direction: "high" keeps the largest values, "low" the smallest.
"""

from __future__ import annotations

import numpy as np

from siftlm.scores.davir import davir
from siftlm.scores.el2n import el2n
from siftlm.scores.forgetting import forgetting
from siftlm.scores.grad_norm import grad_norm
from siftlm.scores.ifd import ifd
from siftlm.scores.lp import lp
from siftlm.scores.lp_app import lp_app
from siftlm.scores.pair_margin import davir_margin, dpo_margin
from siftlm.scores.ppl import ppl
from siftlm.scores.rho import rho
from siftlm.scores.tokens import tokens_in, tokens_out, tokens_total

PAIR_LOGPS = ("policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp", "ref_rejected_logp")

SCORES = {
    "davir": (davir, ("base_loss", "ref_loss"), "high"),
    "rho": (rho, ("base_loss", "ref_loss"), "high"),
    "ppl": (ppl, ("base_loss",), "high"),
    "lp": (lp, ("ppl_trajectory",), "low"),
    "lp_app": (lp_app, ("ppl_trajectory",), "low"),
    "ifd": (ifd, ("base_loss", "uncond_loss"), "high"),
    "el2n": (el2n, ("base_el2n",), "high"),
    "forgetting": (forgetting, ("acc_trajectory",), "high"),
    "grad_norm": (grad_norm, ("grad_norm",), "high"),
    "dpo_margin": (dpo_margin, PAIR_LOGPS, "high"),
    "davir_margin": (davir_margin, PAIR_LOGPS, "high"),
    "tokens_in": (tokens_in, ("n_prompt",), "high"),
    "tokens_out": (tokens_out, ("n_response",), "high"),
    "tokens_total": (tokens_total, ("n_prompt", "n_response"), "high"),
}


def compute(name: str, signals: dict, **options) -> np.ndarray:
    """Compute score ``name`` from a dict of signal arrays; error naming any missing signal."""
    if name not in SCORES:
        raise KeyError(f"unknown score {name!r}; known: {', '.join(SCORES)}")
    fn, needs, _ = SCORES[name]
    missing = [s for s in needs if s not in signals]
    if missing:
        raise KeyError(f"score {name!r} needs signals {missing}; have {sorted(signals)}")
    return fn(*(signals[s] for s in needs), **options)

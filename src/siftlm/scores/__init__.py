"""Scores: pure numpy functions of stored signals, one formula per file.

``SCORES`` maps a name to ``Score(fn, needs, direction)``: the function, the signal columns it takes (columns
of the signals table, ``siftlm.signals.table``, with the trajectory as ``ppl_trajectory`` / ``acc_trajectory``
matrices) and which end to keep ("high" keeps the largest values, "low" the smallest).
``add_scores`` computes every score a table has the signals for.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from siftlm.errors import UsageError
from siftlm.scores.davir import davir, davir_epoch1
from siftlm.scores.el2n import el2n
from siftlm.scores.forgetting import forgetting
from siftlm.scores.grad_norm import grad_norm
from siftlm.scores.ifd import ifd
from siftlm.scores.lp import lp
from siftlm.scores.lp_app import lp_app
from siftlm.scores.pair_margin import davir_margin, dpo_margin
from siftlm.scores.ppl import ppl
from siftlm.scores.rating import rating
from siftlm.scores.rho import rho
from siftlm.scores.tokens import tokens_in, tokens_out, tokens_total
from siftlm.signals.table import signal_arrays, trajectory_columns


class Score(NamedTuple):
    fn: object
    needs: tuple[str, ...]
    direction: str          # "high" keeps the largest values, "low" the smallest


PAIR_LOGPS = ("policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp", "ref_rejected_logp")

SCORES = {
    "davir": Score(davir, ("base_loss", "ref_loss"), "high"),
    "davir_e1": Score(davir_epoch1, ("ppl_trajectory",), "high"),
    "davir_xfit": Score(davir, ("base_loss", "ref_xfit_loss"), "high"),
    "rho": Score(rho, ("base_loss", "ref_loss"), "high"),
    "ppl": Score(ppl, ("base_loss",), "high"),
    "lp": Score(lp, ("ppl_trajectory",), "low"),
    "lp_app": Score(lp_app, ("ppl_trajectory",), "low"),
    "ifd": Score(ifd, ("base_loss", "uncond_loss"), "high"),
    "el2n": Score(el2n, ("base_el2n",), "high"),
    "forgetting": Score(forgetting, ("acc_trajectory",), "high"),
    "grad_norm": Score(grad_norm, ("grad_norm",), "high"),
    "rating": Score(rating, ("rating",), "high"),
    "dpo_margin": Score(dpo_margin, PAIR_LOGPS, "high"),
    "davir_margin": Score(davir_margin, PAIR_LOGPS, "high"),
    "tokens_in": Score(tokens_in, ("n_prompt",), "high"),
    "tokens_out": Score(tokens_out, ("n_response",), "high"),
    "tokens_total": Score(tokens_total, ("n_prompt", "n_response"), "high"),
}
EPOCH_OPTION = ("lp", "lp_app")     # scores that take ``epoch=`` (which step of the trajectory)


def direction(name: str, given: str | None = None) -> str:
    """``given`` when set, else the registered direction of score ``name`` ("high" for any other column)."""
    if given is not None:
        if given not in ("high", "low"):
            raise UsageError(f"direction must be 'high' or 'low', got {given!r}")
        return given
    return SCORES[name].direction if name in SCORES else "high"


def compute(name: str, signals: dict, **options) -> np.ndarray:
    """Compute score ``name`` from a dict of signal arrays; error naming any missing signal."""
    if name not in SCORES:
        raise KeyError(f"unknown score {name!r}; known: {', '.join(SCORES)}")
    fn, needs, _ = SCORES[name]
    missing = [s for s in needs if s not in signals]
    if missing:
        raise KeyError(f"score {name!r} needs signals {missing}; have {sorted(signals)}")
    return fn(*(signals[s] for s in needs), **options)


def add_scores(table: pd.DataFrame, names: list[str] | None = None, *, lp_epoch: int = 1) -> tuple[pd.DataFrame, dict]:
    """Add every computable score (or exactly ``names``) as columns; returns the table and the number of
    non-finite values per score (never selected, reported in the summary)."""
    arrays = signal_arrays(table)
    out = table.copy()
    guarded = {}
    for name in names or list(SCORES):
        if not names and not all(n in arrays for n in SCORES[name].needs):
            continue
        values = compute(name, arrays, **({"epoch": lp_epoch} if name in EPOCH_OPTION else {}))
        out[name] = values
        guarded[name] = int((~np.isfinite(values)).sum())
    return out, guarded


def inputs_of(name: str, table: pd.DataFrame) -> list[str]:
    """The signal columns score ``name`` is computed from, as present in ``table`` (so a selected row can say
    why it was kept); trajectories expand to their per-epoch columns."""
    cols: list[str] = []
    for need in SCORES[name].needs if name in SCORES else ():
        if need.endswith("_trajectory"):
            cols += trajectory_columns(table, need.split("_")[0])
        elif need in table:
            cols.append(need)
    return cols

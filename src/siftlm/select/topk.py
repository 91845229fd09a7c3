"""Top-k selection by a score: exact budget, deterministic tie-break by id, NaN never selected."""

from __future__ import annotations

import numpy as np
import pandas as pd

from siftlm.backends import Executor
from siftlm.config import SelectConfig, UsageError, closest
from siftlm.scores import SCORES, direction, inputs_of
from siftlm.select.picked import CannotSelect, Picked


def budget_count(budget: int | float, n: int) -> int:
    """How many of ``n`` examples a budget keeps: an int is a count; a float in (0, 1] is a fraction of ``n``
    (rounded to nearest, at least 1; 1.0 keeps all). A float above 1 with no fractional part is taken as a count
    (as written in older configs); any other value is an error."""
    if isinstance(budget, bool) or budget <= 0:
        raise UsageError(f"budget must be a positive count or a fraction in (0, 1], got {budget}")
    if isinstance(budget, (int, np.integer)):
        return int(budget)
    if budget <= 1:
        return max(1, int(np.floor(budget * n + 0.5)))
    if budget != int(budget):
        raise UsageError(f"a budget above 1 is a count and must be a whole number, got {budget}")
    return int(budget)


def rank(ids, scores, *, direction: str = "high") -> np.ndarray:
    """1-based rank of every example (1 = kept first); ties broken by id ascending; NaN scores get rank 0."""
    if direction not in ("high", "low"):
        raise UsageError(f"direction must be 'high' or 'low', got {direction!r}")
    s = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(ids, dtype=str)
    finite = np.isfinite(s)
    key = np.where(finite, -s if direction == "high" else s, np.inf)
    order = np.lexsort((ids, key))          # last key is primary: score, then id
    ranks = np.zeros(len(s), dtype=np.int64)
    ranks[order] = np.arange(1, len(s) + 1)
    ranks[~finite] = 0
    return ranks


def topk(ids, scores, *, budget: float, direction: str = "high") -> np.ndarray:
    """Positions of the selected examples, best first. Raises if fewer finite scores than the budget."""
    k = budget_count(budget, len(ids))
    ranks = rank(ids, scores, direction=direction)
    n_finite = int((ranks > 0).sum())
    if k > n_finite:
        raise CannotSelect(f"budget {k} exceeds the {n_finite} examples with a finite score "
                         f"({len(ids) - n_finite} have NaN/inf)")
    return np.argsort(np.where(ranks > 0, ranks, np.iinfo(np.int64).max), kind="stable")[:k]


def pick(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    """The top ``cfg.budget`` rows by ``cfg.by``; each reason names the score and the signals behind it."""
    if cfg.by not in table:
        have = [c for c in table.columns if c in SCORES] or [c for c in table.columns if c != "id"]
        raise UsageError(f"no score column {cfg.by!r}{closest(cfg.by, have)} in the scores table; have {', '.join(have)}")
    how = direction(cfg.by, cfg.direction)
    values = table[cfg.by].to_numpy()
    pos = topk(table["id"].to_numpy(), values, budget=cfg.budget, direction=how)
    inputs = inputs_of(cfg.by, table)
    n = len(table)
    reasons = []
    for r, p in enumerate(pos, start=1):
        why = ", ".join(f"{c}={table[c].iloc[p]:.4g}" for c in inputs)
        reasons.append(f"{cfg.by}={values[p]:.4g}{f' ({why})' if why else ''}: rank {r} of {n}, "
                       f"top {len(pos)} by {how}est {cfg.by}")
    return Picked(pos, reasons, values[pos])

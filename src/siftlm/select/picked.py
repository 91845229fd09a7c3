"""What every selector is and returns: one contract for every method (``Method``), and the picks in selection
order, why each was picked, and per-row extras (``Picked``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from siftlm.errors import DataError


class CannotSelect(DataError):
    """This many rows cannot be selected from this table by this method (a budget past the rows, more picks than
    finite scores, a cluster quota it cannot fill). A token budget tries other counts; anywhere else it is the
    user's error."""


def _same(table, features, cfg):
    return cfg


def _no_score(cfg) -> bool:
    return False


@dataclass(frozen=True)
class Method:
    """A selection method. ``pick(table, features, cfg, *, executor=None) -> Picked`` picks ``cfg.budget`` rows of
    ``table`` (``features``: one row per table row, or None; ``executor``: where independent pieces run, e.g. GreeDi's
    parts and k-means assignment, given by the CLI or a recipe; None: this process), raising ``CannotSelect`` when
    that count cannot be picked and ``UsageError`` for settings it cannot run with. ``settle(table, features, cfg)``
    fixes, once, the settings that must not change with the budget (DPP's dtype "auto": one precision, one checkpoint
    identity for every count a token budget tries). ``ranks_by(cfg)``: whether the picks are ranked by the score ``cfg.by``."""

    pick: Callable
    settle: Callable = _same
    ranks_by: Callable = _no_score


@dataclass
class Picked:
    positions: np.ndarray                       # picked rows of the scores table, in selection order (rank 1 first)
    reasons: list[str]                          # one line per pick: why it was kept
    score: np.ndarray                           # one value per pick for selection.parquet (score, or DPP gain)
    columns: dict[str, object] = field(default_factory=dict)   # extra per-row columns of scores.parquet
    note: str = ""                              # why fewer than the budget were picked, if so

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.int64)
        if not len(self.positions) == len(self.reasons) == len(self.score):
            raise ValueError(f"{len(self.positions)} picks, {len(self.reasons)} reasons, {len(self.score)} scores")
        if len(set(self.positions.tolist())) != len(self.positions):
            raise ValueError("a row was picked twice")

"""What every selector returns: the picks in selection order, why each was picked, and per-row extras."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

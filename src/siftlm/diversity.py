"""How diverse a dataset is: the log-determinant distance to random unit vectors (DPP-diversity paper eq. 3).

LDD = (1/n) log(det R_n / det L_n) over greedy MAP steps n, where L is the RBF kernel on the dataset's
features and R the same kernel on as many seeded random unit vectors of the same dimension (the most diverse
reference there is). 0 means as diverse as random directions; larger means less diverse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from siftlm.errors import MissingInput, UsageError
from siftlm.files import atomic_write
from siftlm.report.diversity import plot_ldd
from siftlm.select.dpp import greedy_map
from siftlm.signals.table import load_features
from siftlm.stats import l2_normalize


def unit_sphere(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n seeded random unit vectors in R^d: the maximally diverse reference of the log-determinant distance."""
    v = np.random.default_rng(seed).standard_normal((n, d))
    return l2_normalize(v)


class LDD(NamedTuple):
    value: float                   # LDD at the last step; +inf when det L_n = 0 (the kernel became singular)
    curve: np.ndarray              # (1/k) log(det R_k / det L_k) for the k = 1.. steps greedy could take
    steps: int                     # steps asked for (n)
    singular_after: int | None     # greedy on L stopped after this many picks (duplicates), else None

    @property
    def partial(self) -> bool:
        return self.singular_after is not None

    def describe(self) -> str:
        if not self.partial:
            return f"{self.value:.4f}"
        return f"inf (kernel singular after {self.singular_after} of {self.steps} steps; {self.curve[-1]:.4f} there)"


def log_det_distance(features, *, gamma: float = 1.0, steps: int | None = None, seed: int = 0,
                     scale: float = 1.0, eps: float = 1e-12) -> LDD:
    """LDD over greedy steps n (paper eq. 3).

    Both runs use the greedy MAP marginal gains, so the curve is cumsum(gain_R - gain_L) / n. Invariant to
    kernel scale; 0 for the reference against itself. When greedy on L stops early because the kernel is
    numerically singular (e.g. exact duplicates), det L_n = 0 and the paper's value is +inf: ``value`` is inf,
    ``singular_after`` says where, and the curve stops there.
    """
    x = np.asarray(features, dtype=np.float64)
    n = steps or x.shape[0]
    ref = unit_sphere(x.shape[0], x.shape[1], seed)
    gl = greedy_map(x, n, gamma=gamma, scale=scale, eps=eps, dtype=torch.float64)
    gr = greedy_map(ref, n, gamma=gamma, scale=scale, eps=eps, dtype=torch.float64)
    if gr.stopped:
        raise UsageError(f"the random reference became singular after {len(gr.order)} of {n} steps: use fewer "
                           "steps, a higher dimension or a larger gamma")
    k = len(gl.gains)
    curve = np.cumsum(gr.gains[:k] - gl.gains) / np.arange(1, k + 1)
    if gl.stopped:
        return LDD(float("inf"), curve, n, k)
    return LDD(float(curve[-1]), curve, n, None)


def _selected_ids(selection, features) -> list[str] | None:
    """The ids of a selection.parquet, to restrict a Parquet feature file to them (None: every row)."""
    if selection is None:
        return None
    if Path(features).suffix == ".npy":
        raise UsageError(f"{features}: --selection needs Parquet features (with ids), not .npy")
    if not Path(selection).exists():
        raise MissingInput(f"{selection}: no such selection file")
    return pd.read_parquet(selection, columns=["id"])["id"].tolist()


def ldd_report(paths: list[str | Path], *, gamma: float = 1.0, steps: int | None = None, seed: int = 0,
               normalize: bool = True, plot: str | Path = "ldd.png", json_out: str | Path = "ldd.json",
               selection: str | Path | None = None) -> dict:
    """LDD of each feature file (.npy or .parquet), the curves in one plot and everything in a JSON file.

    Returns {path: {"ldd", "infinite", "singular_after", "ldd_at_last_step", "steps", "n", "d", "curve"}}; "ldd" is
    None (JSON null) and "infinite" true when the kernel became singular (the paper's value is +inf).
    """
    results, curves = {}, []
    for f in paths:
        x = load_features(f, _selected_ids(selection, f)).astype(np.float64)
        if normalize:
            x = l2_normalize(x)
        r = log_det_distance(x, gamma=gamma, steps=steps, seed=seed)
        curves.append((f"{Path(f).name}: {r.describe()}", r.curve, r.partial))
        results[str(f)] = {"ldd": None if r.partial else r.value, "infinite": r.partial,
                           "singular_after": r.singular_after, "ldd_at_last_step": float(r.curve[-1]), "steps": r.steps,
                           "n": len(x), "d": int(x.shape[1]), "curve": r.curve.tolist()}
    plot_ldd(curves, plot)
    with atomic_write(json_out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    return results

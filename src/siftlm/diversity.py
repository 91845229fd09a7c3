"""How diverse a dataset is: the log-determinant distance to random unit vectors (DPP-diversity paper eq. 3).

LDD = (1/n) log(det R_n / det L_n) over greedy MAP steps n, where L is the RBF kernel on the dataset's
features and R the same kernel on as many seeded random unit vectors of the same dimension (the most diverse
reference there is). 0 means as diverse as random directions; larger means less diverse.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from siftlm.data.io import atomic_write
from siftlm.report.html import pyplot
from siftlm.select.dpp import greedy_map
from siftlm.signals.table import load_features


def unit_sphere(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n seeded random unit vectors in R^d: the maximally diverse reference of the log-determinant distance."""
    v = np.random.default_rng(seed).standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def log_det_distance(features, *, gamma: float = 1.0, steps: int | None = None, seed: int = 0,
                     scale: float = 1.0, eps: float = 1e-12) -> tuple[float, np.ndarray]:
    """LDD over greedy steps n: returns (final value, curve).

    Both runs use the greedy MAP marginal gains, so the curve is cumsum(gain_R - gain_L) / n. Invariant to
    kernel scale; 0 for the reference against itself.
    """
    x = np.asarray(features, dtype=np.float64)
    n = steps or x.shape[0]
    ref = unit_sphere(x.shape[0], x.shape[1], seed)
    gl = greedy_map(x, n, gamma=gamma, scale=scale, eps=eps, dtype=torch.float64)
    gr = greedy_map(ref, n, gamma=gamma, scale=scale, eps=eps, dtype=torch.float64)
    k = min(len(gl.gains), len(gr.gains))
    curve = np.cumsum(gr.gains[:k] - gl.gains[:k]) / np.arange(1, k + 1)
    return float(curve[-1]), curve


def ldd_report(paths: list[str | Path], *, gamma: float = 1.0, steps: int | None = None, seed: int = 0,
               normalize: bool = True, plot: str | Path = "ldd.png", json_out: str | Path = "ldd.json") -> dict:
    """LDD of each feature file (.npy or .parquet), the curves in one plot and everything in a JSON file.

    Returns {path: {"ldd", "n", "d", "curve"}}.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    results = {}
    for f in paths:
        x = load_features(f).astype(np.float64)
        if normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        value, curve = log_det_distance(x, gamma=gamma, steps=steps, seed=seed)
        ax.plot(np.arange(1, len(curve) + 1), curve, label=Path(f).name)
        results[str(f)] = {"ldd": value, "n": len(x), "d": int(x.shape[1]), "curve": curve.tolist()}
    ax.set(xlabel="greedy step n", ylabel="(1/n) log det R_n / det L_n", title="log-determinant distance")
    ax.legend()
    with atomic_write(plot) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    with atomic_write(json_out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    return results

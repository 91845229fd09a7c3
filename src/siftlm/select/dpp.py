"""Greedy MAP inference for a DPP with an RBF kernel (Chen et al. 2018; DPP-diversity paper §3-4).

Kernel: K_ij = exp(-gamma * ||x_i - x_j||^2); with a quality score q (standardised to mean 0, std 1 first,
so beta means the same on any scale), L = diag(e^{beta q}) K diag(e^{beta q}), beta = lambda / (2 (1 - lambda)),
which maximises lambda * sum q_i + (1 - lambda) * log det K_Y (paper eq. 1; q plays the role of log-quality).

The incremental Cholesky update keeps, for every item, its squared residual d_i^2 (the marginal gain of
adding it is log d_i^2) and one row of Cholesky coefficients per pick. Kernel rows are computed on the fly
from the features, so memory is O(N * (M + D)) and no N x N matrix ever exists. Time is O(N M D + N M^2).
The rows are immutable once computed, so a checkpoint appends them to a file and a resumed run continues
from the last saved pick. If every remaining d_i^2 falls below ``eps`` the kernel restricted to the
picks is numerically singular: the run stops and says how many it picked and why.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from siftlm.config import SelectConfig
from siftlm.data.io import atomic_write
from siftlm.scores import direction
from siftlm.select.picked import Picked
from siftlm.select.topk import budget_count


@dataclass
class DPPResult:
    order: np.ndarray                      # picked item indices, in pick order
    gains: np.ndarray                      # log marginal gain of each pick; their sum is log det L_S
    requested: int
    stopped: str | None = None             # why fewer than ``requested`` were picked, else None
    settings: dict = field(default_factory=dict)


def quality_weights(quality, lam: float) -> np.ndarray | None:
    """e^{beta q} with q standardised; None when there is no quality or lambda = 0 (diversity only)."""
    if quality is None or lam == 0:
        return None
    if not 0 <= lam < 1:
        raise ValueError(f"lambda must be in [0, 1), got {lam}")
    q = np.asarray(quality, dtype=np.float64)
    if not np.isfinite(q).all():
        raise ValueError(f"quality has {int((~np.isfinite(q)).sum())} non-finite values; drop or fill them first")
    sd = q.std()
    q = (q - q.mean()) / (sd if sd > 0 else 1.0)
    beta = lam / (2 * (1 - lam))
    return np.exp(beta * q)


def _digest(*tensors: torch.Tensor) -> str:
    import hashlib

    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def greedy_map(features, m: int, *, gamma: float = 1.0, quality=None, lam: float = 0.0, eps: float = 1e-10,
               scale: float = 1.0, device: str | None = None, dtype=torch.float32,
               checkpoint: str | Path | None = None, checkpoint_every: int = 256) -> DPPResult:
    """Pick up to ``m`` items maximising log det L_S greedily. ``scale`` multiplies the kernel (for tests of
    scale invariance). ``checkpoint``: a folder for resumable state (Cholesky rows appended as they are made)."""
    x = torch.as_tensor(np.asarray(features), dtype=dtype, device=device)
    eps = max(eps, 10 * torch.finfo(dtype).eps)      # below float32's resolution a residual is rounding noise
    n = x.shape[0]
    m = min(m, n)
    w = quality_weights(quality, lam)
    w = torch.ones(n, dtype=dtype, device=x.device) if w is None else torch.as_tensor(w, dtype=dtype, device=x.device)
    sq = (x * x).sum(1)
    diag = scale * w * w                              # L_ii: K_ii = 1 for the RBF kernel
    rows = torch.empty((m, n), dtype=dtype, device=x.device)
    order: list[int] = []
    gains: list[float] = []
    settings = {"gamma": gamma, "lambda": lam, "eps": eps, "scale": scale, "n": n, "m": m, "dtype": str(dtype),
                "inputs": _digest(x, w)}   # another feature set or quality must never resume this state
    start = _resume(checkpoint, settings, rows, order, gains) if checkpoint else 0
    d2 = diag - (rows[:start] ** 2).sum(0)
    if order:
        d2[torch.as_tensor(order, device=x.device)] = -torch.inf
    stopped = None
    saved = start
    for j in range(start, m):
        i = int(torch.argmax(d2))
        if not d2[i] > eps:
            stopped = (f"kernel numerically singular after {j} of {m} picks (largest remaining marginal gain "
                       f"{float(d2[i]):.3g} <= eps {eps}); lower gamma, raise eps or pick fewer")
            break
        dj = torch.sqrt(d2[i])
        k = scale * w[i] * w * torch.exp(-gamma * torch.clamp(sq[i] + sq - 2 * (x @ x[i]), min=0))  # row L_i,:
        e = (k - rows[:j, i] @ rows[:j]) / dj if j else k / dj
        rows[j] = e
        d2 = d2 - e * e
        d2[i] = -torch.inf
        order.append(i)
        gains.append(float(torch.log(dj * dj)))
        if checkpoint and (len(order) - saved >= checkpoint_every):
            _save(checkpoint, settings, rows, saved, order, gains)
            saved = len(order)
    if checkpoint and len(order) > saved:
        _save(checkpoint, settings, rows, saved, order, gains)
    return DPPResult(np.array(order, dtype=np.int64), np.array(gains), m, stopped, settings)


def _save(folder, settings, rows, saved: int, order, gains) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    new = rows[saved:len(order)].cpu().numpy()
    with open(folder / "rows.bin", "ab") as f:       # append-only: rows never change once computed
        f.truncate(saved * rows.shape[1] * new.itemsize)  # drop a partial write from a crash
        f.write(new.tobytes())
        f.flush()
        os.fsync(f.fileno())
    with atomic_write(folder / "state.json") as tmp:
        tmp.write_text(json.dumps({"settings": settings, "order": order, "gains": gains}))


def _resume(folder, settings, rows, order, gains) -> int:
    state_file = Path(folder) / "state.json"
    if not state_file.exists():
        return 0
    state = json.loads(state_file.read_text())
    if state["settings"] != settings:
        raise RuntimeError(f"{folder}: checkpoint was made with other settings {state['settings']}")
    k = len(state["order"])
    np_dtype = torch.empty(0, dtype=rows.dtype).numpy().dtype
    data = np.fromfile(Path(folder) / "rows.bin", dtype=np_dtype, count=k * rows.shape[1])
    rows[:k] = torch.as_tensor(data.reshape(k, rows.shape[1]), dtype=rows.dtype, device=rows.device)
    order.extend(state["order"])
    gains.extend(state["gains"])
    return k


def pick(table: pd.DataFrame, features, cfg: SelectConfig) -> Picked:
    """Greedy MAP DPP: diversity alone (``cfg.lam`` = 0) or quality x diversity with ``cfg.by`` as the quality.

    A "keep lowest" score (e.g. lp) is negated to serve as quality. The order is the pick order and each reason
    names the marginal gain; ``cfg.checkpoint`` makes an interrupted run resume.
    """
    if features is None:
        raise ValueError(f"--method {cfg.method} needs --features")
    lam = cfg.lam or 0.0
    quality = None
    if lam > 0:
        if cfg.by not in table:
            raise ValueError(f"no column {cfg.by!r} for the DPP quality; have {list(table.columns)}")
        sign = -1.0 if direction(cfg.by, cfg.direction) == "low" else 1.0
        quality = sign * table[cfg.by].to_numpy(dtype=np.float64)
    x = np.asarray(features, dtype=np.float32)
    if cfg.normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    res = greedy_map(x, budget_count(cfg.budget, len(table)), gamma=cfg.gamma, quality=quality, lam=lam,
                     checkpoint=cfg.checkpoint)
    gain = np.full(len(table), np.nan)
    gain[res.order] = res.gains
    q = [f", {cfg.by}={table[cfg.by].iloc[p]:.4g}" for p in res.order] if quality is not None else [""] * len(res.order)
    reasons = [f"dpp pick {r} of {len(res.order)}: log marginal gain {g:.4g}{qt} (gamma={cfg.gamma}, lambda={lam})"
               for r, (g, qt) in enumerate(zip(res.gains, q, strict=True), start=1)]
    return Picked(res.order, reasons, res.gains, {"dpp_gain": gain}, res.stopped or "")

"""Greedy MAP inference for a DPP with an RBF kernel (Chen et al. 2018; DPP-diversity paper §3-4).

Kernel: K_ij = exp(-gamma * ||x_i - x_j||^2); with a quality score q, L = diag(e^{beta q}) K diag(e^{beta q}),
beta = lambda / (2 (1 - lambda)), which maximises lambda * sum q_i + (1 - lambda) * log det K_Y (paper eq. 1;
q plays the role of log-quality). q is used as given, so lambda means what the paper's lambda means on that
score's scale; ``standardize=True`` rescales q to mean 0 and standard deviation 1 first (an option of ours, named
in every reason).

Since L_S = W_S K_S W_S, the Cholesky factor of L is K's scaled by the weights, and the marginal gain of adding
item i is log d_i^2 + 2 beta q_i, with d_i^2 item i's residual under K (between 0 and 1). The incremental
Cholesky update therefore runs on K alone and the quality enters only in log space: no e^{beta q} is ever formed,
so a score such as #output tokens at lambda = 0.9 (beta = 4.5) neither overflows nor underflows. The update keeps,
for every item, d_i^2 and one row of Cholesky coefficients per pick. Kernel rows are computed on the fly
from the features, so memory is O(N * (M + D)) and no N x N matrix ever exists. Time is O(N M D + N M^2).
float64 by default (near-ties between items flip picks in float32), float32 when float64 would not fit.

A checkpoint folder holds the rows (appended; they never change), the picks and the exact d^2 at the last save
(``state.json`` is written last and names the residuals file it goes with, so a kill between two writes never
pairs picks with other residuals), so a resumed run makes exactly the picks an uninterrupted one makes, and a run
with a smaller budget reuses the prefix of a larger one (greedy picks do not depend on the budget; the checkpoint is
removed after a finished selection unless kept). An item whose residual d_i^2 falls below ``eps`` lies numerically
in the span of the picks and is passed over; when no item is left, the run stops and says how many it picked and why.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from siftlm.backends import Executor, here
from siftlm.config import SelectConfig
from siftlm.errors import DataError, UsageError
from siftlm.files import atomic_write
from siftlm.keyed import open_keyed
from siftlm.scores import direction
from siftlm.select.picked import Picked
from siftlm.select.topk import budget_count
from siftlm.stats import l2_normalize

DTYPES = {"float64": torch.float64, "float32": torch.float32}
MEMORY_SHARE = 0.5      # float64 unless its state would take more than this share of the free memory


@dataclass
class DPPResult:
    order: np.ndarray                      # picked item indices, in pick order
    gains: np.ndarray                      # log marginal gain of each pick under L; their sum is log det L_S
    requested: int
    stopped: str | None = None             # why fewer than ``requested`` were picked, else None
    settings: dict = field(default_factory=dict)


def quality_log_weights(quality, lam: float, *, standardize: bool = False) -> np.ndarray | None:
    """2 beta q: the log of L_ii / K_ii = e^{2 beta q_i}; None when there is no quality or lambda = 0."""
    if quality is None or lam == 0:
        return None
    if not 0 <= lam < 1:
        raise UsageError(f"lambda must be in [0, 1), got {lam}")
    q = np.asarray(quality, dtype=np.float64)
    if not np.isfinite(q).all():
        raise DataError(f"quality has {int((~np.isfinite(q)).sum())} non-finite values; drop or fill them first")
    if standardize:
        sd = q.std()
        q = (q - q.mean()) / (sd if sd > 0 else 1.0)
    return 2 * (lam / (2 * (1 - lam))) * q


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_dtype(n: int, m: int, d: int, device: torch.device, asked: str = "auto") -> torch.dtype:
    """float64 unless its state (features, M rows of N coefficients, a few N-vectors) would take more than half
    the free memory; ``asked`` float64 / float32 forces one."""
    if asked != "auto":
        if asked not in DTYPES:
            raise UsageError(f"unknown DPP dtype {asked!r}; known: auto, {', '.join(DTYPES)}")
        return DTYPES[asked]
    need = 8 * n * (m + d + 4)
    return torch.float64 if need <= MEMORY_SHARE * _free_bytes(device) else torch.float32


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def greedy_map(features, m: int, *, gamma: float = 1.0, quality=None, lam: float = 0.0, standardize: bool = False,
               eps: float = 1e-10, scale: float = 1.0, device: str | None = None, dtype: torch.dtype | str = "auto",
               checkpoint: str | Path | None = None, checkpoint_every: int = 256) -> DPPResult:
    """Pick up to ``m`` items maximising log det L_S greedily. ``scale`` multiplies the kernel (for tests of
    scale invariance). ``checkpoint``: a folder for resumable state."""
    n, d = np.shape(features)
    m = min(m, n)
    dev = torch.device(device or "cpu")
    dtype = dtype if isinstance(dtype, torch.dtype) else choose_dtype(n, m, d, dev, dtype)
    x = torch.as_tensor(np.asarray(features), dtype=dtype, device=dev)
    eps = max(eps, 10 * torch.finfo(dtype).eps)      # below the dtype's resolution a residual is rounding noise
    logw = quality_log_weights(quality, lam, standardize=standardize)
    logw = torch.zeros(n, dtype=dtype, device=dev) if logw is None else torch.as_tensor(logw, dtype=dtype, device=dev)
    sq = (x * x).sum(1)
    settings = {"gamma": gamma, "lambda": lam, "standardize": standardize, "eps": eps, "scale": scale, "n": n,
                "dtype": str(dtype).removeprefix("torch."),
                "inputs": _digest(x, logw)}   # another feature set or quality must never resume this state
    rows = torch.empty((m, n), dtype=dtype, device=dev)
    order: list[int] = []
    gains: list[float] = []
    if checkpoint:                           # a keyed folder: another feature set or setting is refused, never mixed
        checkpoint = open_keyed(checkpoint, settings, what="a DPP checkpoint",
                                labels={"inputs": "other features or quality scores"}).folder
    d2 = _resume(checkpoint, rows, order, gains) if checkpoint else None
    if len(order) >= m:                      # a larger run already made these picks: greedy's prefix
        return DPPResult(np.array(order[:m], dtype=np.int64), np.array(gains[:m]), m, None, settings)
    if d2 is None:
        d2 = torch.ones(n, dtype=dtype, device=dev)          # K's residuals: K_ii = 1 for the RBF kernel
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    if order:
        alive[torch.as_tensor(order, device=dev)] = False
    log_scale = float(np.log(scale))
    stopped = None
    saved = start = len(order)
    for j in range(start, m):
        ok = alive & (d2 > eps)              # a residual below eps is rounding noise: in the span of the picks
        if not bool(ok.any()):
            stopped = (f"kernel numerically singular after {j} of {m} picks (every remaining item keeps <= eps "
                       f"{eps} of its own diagonal); lower gamma, raise eps or pick fewer")
            break
        i = int(torch.argmax(torch.where(ok, torch.log(d2.clamp_min(eps)) + logw, -torch.inf)))
        dj = torch.sqrt(d2[i])
        k = torch.exp(-gamma * torch.clamp(sq[i] + sq - 2 * (x @ x[i]), min=0))           # row K_i,:
        e = (k - rows[:j, i] @ rows[:j]) / dj if j else k / dj
        rows[j] = e
        gains.append(float(torch.log(d2[i]) + logw[i]) + log_scale)
        d2 = d2 - e * e
        alive[i] = False
        order.append(i)
        if checkpoint and (len(order) - saved >= checkpoint_every):
            _save(checkpoint, rows, saved, order, gains, d2)
            saved = len(order)
    if checkpoint and len(order) > saved:
        _save(checkpoint, rows, saved, order, gains, d2)
    return DPPResult(np.array(order, dtype=np.int64), np.array(gains), m, stopped, settings)


def _save(folder, rows, saved: int, order, gains, d2) -> None:
    """Append the new rows, write the residuals under a name of their own, then ``state.json`` naming them: a kill
    at any point leaves a state whose rows and residuals match its picks. A failed write (a full disk) truncates
    ``rows.bin`` back and removes what it wrote."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    new = rows[saved:len(order)].cpu().numpy()
    valid = saved * rows.shape[1] * new.itemsize
    d2_name = f"d2-{len(order):07d}.npy"
    try:
        with open(folder / "rows.bin", "ab") as f:      # append-only: rows never change once computed
            f.truncate(valid)                           # drop a partial write from a crash
            f.write(new.tobytes())
            f.flush()
            os.fsync(f.fileno())
        with atomic_write(folder / d2_name) as tmp:     # the exact residuals: recomputing them would round differently
            with open(tmp, "wb") as f:
                np.save(f, d2.cpu().numpy())
        with atomic_write(folder / "state.json") as tmp:   # written last: which rows and which residuals are valid
            tmp.write_text(json.dumps({"order": order, "gains": gains, "d2": d2_name}))
    except BaseException:
        with open(folder / "rows.bin", "ab") as f:
            f.truncate(valid)
        if _state(folder).get("d2") != d2_name:
            (folder / d2_name).unlink(missing_ok=True)
        raise
    for old in folder.glob("d2*.npy"):                  # residuals of earlier saves (and the pre-1 name d2.npy)
        if old.name != d2_name:
            old.unlink(missing_ok=True)


def _state(folder) -> dict:
    path = Path(folder) / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _resume(folder, rows, order, gains) -> torch.Tensor | None:
    """Load a checkpoint's picks (at most as many rows as ``rows`` holds) and, when it can continue, its d^2."""
    state = _state(folder)
    if not state:
        return None
    k = min(len(state["order"]), rows.shape[0])
    np_dtype = torch.empty(0, dtype=rows.dtype).numpy().dtype
    data = np.fromfile(Path(folder) / "rows.bin", dtype=np_dtype, count=k * rows.shape[1])
    rows[:k] = torch.as_tensor(data.reshape(k, rows.shape[1]), device=rows.device)
    order.extend(state["order"][:k])
    gains.extend(state["gains"][:k])
    if k < len(state["order"]):
        return None                      # a prefix of a longer run: nothing to continue
    return torch.as_tensor(np.load(Path(folder) / state.get("d2", "d2.npy")), device=rows.device)



# ---- GreeDi: two-round partitioned greedy, for N too large for one run ----
# Two-round partitioned greedy DPP (GreeDi, Mirzasoleiman et al. 2013), for N too large for one greedy run.
#
# Round 1: the N items are split into ``parts`` random parts of equal size (seeded) and greedy MAP
# (``siftlm.select.dpp.greedy_map``) picks up to M items in each part, independently: as Ray tasks with the ray
# backend, one after another otherwise (memory is then that of one part, O(N/parts * (M + D))). Round 2: greedy MAP
# over the union of the parts' picks (at most parts * M items). The answer is the better, by log det L_S, of the
# round-2 set and the best single part's set, as in GreeDi.
#
# Guarantee: for a monotone submodular objective GreeDi keeps at least (1 - 1/e)^2 / min(parts, M) of the
# centralised optimum with an arbitrary partition (Mirzasoleiman et al. 2013), and (1 - 1/e) / 2 in expectation
# with a random partition (Barbosa et al. 2015). log det L_S is submodular but monotone only while the picks'
# eigenvalues stay >= 1, which an RBF kernel with K_ii = 1 does not promise, so these are guides, not bounds, here:
# ``bench/greedi.py`` measures the ratio of log dets to centralised greedy.
#
# The quality is turned into log-weights once over all N items (standardised over all of them when asked), so a
# part sees the same L as centralised greedy restricted to its items. Parts run through the executor given
# (built by the CLI or a recipe from --backend), in this process without one.


def _part(x: np.ndarray, logw: np.ndarray, m: int, gamma: float, dtype: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Greedy on one part with log-weights given directly (lambda = 1/2 makes 2 beta = 1): picks, gains, dtype."""
    res = greedy_map(x, m, gamma=gamma, quality=logw, lam=0.5, dtype=dtype)
    return res.order, res.gains, res.settings["dtype"]


def logdet_of(features: np.ndarray, logw: np.ndarray, picks: np.ndarray, gamma: float) -> float:
    """log det L_S of a set, computed directly (Cholesky of the RBF kernel plus the log-weights)."""
    x = np.asarray(features, dtype=np.float64)[picks]
    sq = (x * x).sum(1)
    k = np.exp(-gamma * np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None))
    sign, ld = np.linalg.slogdet(k)
    return float(ld + logw[picks].sum()) if sign > 0 else -np.inf


def greedi(features, m: int, *, parts: int, gamma: float = 1.0, quality=None, lam: float = 0.0,
           standardize: bool = False, seed: int = 0, dtype: str = "auto",
           executor: Executor | None = None) -> DPPResult:
    """Up to ``m`` picks by two-round partitioned greedy; ``gains`` are round 2's (or the best part's) marginal
    gains, so their sum is log det L_S of the answer, as for ``greedy_map``."""
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    m = min(m, n)
    logw = quality_log_weights(quality, lam, standardize=standardize)
    logw = np.zeros(n) if logw is None else logw
    split = np.array_split(np.random.default_rng(seed).permutation(n), max(1, min(parts, n)))
    args = [(x[idx], logw[idx], m, gamma, dtype) for idx in split]
    results = (executor or here()).map_tasks(_part, args)
    union = np.concatenate([idx[order] for idx, (order, _, _) in zip(split, results, strict=True)])
    order2, gains2, used = _part(x[union], logw[union], m, gamma, dtype)
    best, best_gains = union[order2], gains2
    for idx, (order, gains, _) in zip(split, results, strict=True):
        if gains.sum() > best_gains.sum() + 1e-12 * abs(best_gains.sum()):
            best, best_gains = idx[order], gains
    settings = {"gamma": gamma, "lambda": lam, "standardize": standardize, "parts": len(split), "seed": seed,
                "union": int(len(union)),
                "dtype": "float32" if "float32" in {r[2] for r in results} | {used} else "float64"}
    stopped = None if len(best) == m else f"GreeDi found {len(best)} of {m} picks (kernel numerically singular)"
    return DPPResult(np.asarray(best, dtype=np.int64), np.asarray(best_gains), m, stopped, settings)


def settle(table: pd.DataFrame, features, cfg: SelectConfig) -> SelectConfig:
    """``cfg`` with dtype "auto" decided once for the whole table (CPU): the same precision, so the same checkpoint
    identity, at every budget a token budget tries."""
    if cfg.dpp_dtype != "auto":
        return cfg
    d = np.shape(features)[1] if features is not None else 0
    return replace(cfg, dpp_dtype=str(choose_dtype(len(table), len(table), d, torch.device("cpu"))).split(".")[-1])


def pick(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    """Greedy MAP DPP: diversity alone (``cfg.lam`` = 0) or quality x diversity with ``cfg.by`` as the quality.

    A "keep lowest" score (e.g. lp) is negated to serve as quality. The order is the pick order and each reason
    names the marginal gain, the settings and the precision; ``cfg.checkpoint`` makes an interrupted run resume.
    """
    if features is None:
        raise UsageError(f"--method {cfg.method} needs --features")
    lam = cfg.lam or 0.0
    quality = None
    if lam > 0:
        if cfg.by not in table:
            raise UsageError(f"no column {cfg.by!r} for the DPP quality; have {list(table.columns)}")
        sign = -1.0 if direction(cfg.by, cfg.direction) == "low" else 1.0
        quality = sign * table[cfg.by].to_numpy(dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    if cfg.normalize:
        x = l2_normalize(x)
    if cfg.dpp_parts > 1:
        res = greedi(x, budget_count(cfg.budget, len(table)), parts=cfg.dpp_parts, gamma=cfg.gamma, quality=quality,
                     lam=lam, standardize=cfg.standardize, seed=cfg.seed, dtype=cfg.dpp_dtype, executor=executor)
    else:
        res = greedy_map(x, budget_count(cfg.budget, len(table)), gamma=cfg.gamma, quality=quality, lam=lam,
                         standardize=cfg.standardize, dtype=cfg.dpp_dtype, checkpoint=cfg.checkpoint)
    gain = np.full(len(table), np.nan)
    gain[res.order] = res.gains
    how = (f"gamma={cfg.gamma}, lambda={lam}" + (f", GreeDi over {cfg.dpp_parts} parts" if cfg.dpp_parts > 1 else "")
           + (f", {cfg.by} standardised" if quality is not None and cfg.standardize else "")
           + f", {res.settings['dtype']}")
    q = [f", {cfg.by}={table[cfg.by].iloc[p]:.4g}" for p in res.order] if quality is not None else [""] * len(res.order)
    reasons = [f"dpp pick {r} of {len(res.order)}: log marginal gain {g:.4g}{qt} ({how})"
               for r, (g, qt) in enumerate(zip(res.gains, q, strict=True), start=1)]
    note = res.stopped or ""
    if res.settings["dtype"] == "float32" and cfg.dpp_dtype == "auto":
        note = (note + "; " if note else "") + "float32: float64 would not fit in half the free memory"
    return Picked(res.order, reasons, res.gains, {"dpp_gain": gain}, note)

"""S2L (Yang et al. 2024): cluster the loss trajectories the reference fine-tune recorded and sample evenly across the
clusters: small clusters are taken whole, the budget left is shared equally among the rest (seeded within a cluster).
The trajectories are the per-epoch response losses log P_0..log P_n already in the scores table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from siftlm.backends import Executor
from siftlm.config import SelectConfig, UsageError
from siftlm.select.cluster import kmeans
from siftlm.select.picked import CannotSelect, Picked
from siftlm.select.topk import budget_count
from siftlm.signals.table import trajectory_columns


def balanced(sizes: list[int], k: int) -> list[int]:
    """How many of each cluster: as equal as the sizes allow, summing to exactly k (smallest clusters first)."""
    if not 0 <= k <= sum(sizes):
        raise CannotSelect(f"budget {k} must be between 0 and {sum(sizes)}")
    take = [0] * len(sizes)
    left, open_ = k, sorted(range(len(sizes)), key=lambda c: (sizes[c], c))
    while left and open_:
        share, extra = divmod(left, len(open_))
        for j, c in enumerate(list(open_)):
            want = share + (1 if j >= len(open_) - extra else 0)     # the larger clusters take the remainder
            got = min(want, sizes[c] - take[c])
            take[c] += got
            left -= got
        open_ = [c for c in open_ if take[c] < sizes[c]]
    return take


def pick(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    cols = trajectory_columns(table, "ppl")
    if len(cols) < 2:
        raise UsageError("--method s2l needs the loss trajectory (ppl_0, ppl_1, ...): score with siftlm score first")
    traj = np.log(table[cols].to_numpy(dtype=np.float64))           # per-epoch mean response losses
    k = budget_count(cfg.budget, len(table))
    labels = kmeans(traj, cfg.clusters, seed=cfg.seed, backend=cfg.kmeans, sample=cfg.kmeans_sample,
                    executor=executor)
    clusters = sorted(set(labels.tolist()))
    members = [np.flatnonzero(labels == c) for c in clusters]
    take = balanced([len(m) for m in members], k)
    rng = np.random.default_rng(cfg.seed)
    picks, reasons = [], []
    for c, m, t in zip(clusters, members, take, strict=True):
        chosen = np.sort(rng.choice(m, size=t, replace=False)) if t < len(m) else m
        picks += chosen.tolist()
        reasons += [f"loss-trajectory cluster {c} (size {len(m)}, takes {t})"] * len(chosen)
    return Picked(np.array(picks), reasons, np.full(len(picks), np.nan), {"cluster": labels})

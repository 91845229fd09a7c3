"""Near-duplicate removal by cosine similarity of embeddings: walk the examples in order (input order, or best
first by a score), drop any whose similarity to an already kept example reaches the threshold, and record
which kept example it duplicates. With cluster labels, comparisons stay within each cluster (for large N)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from siftlm.backends import Executor
from siftlm.config import SelectConfig
from siftlm.errors import UsageError
from siftlm.scores import direction
from siftlm.select.cluster import kmeans
from siftlm.select.picked import Picked
from siftlm.select.topk import budget_count, rank
from siftlm.stats import l2_normalize

CLUSTER_ABOVE = 20_000      # beyond this many examples, compare only within k-means clusters


def dedup(features, ids, *, threshold: float = 0.95, labels=None, order=None) -> tuple[np.ndarray, dict[str, str]]:
    """Returns (kept positions in walk order, {dropped id: id it duplicates}). ``order``: the walk order
    (positions; default input order)."""
    x = np.asarray(features, dtype=np.float32)
    x = l2_normalize(x)
    ids = list(ids)
    order = np.arange(len(x)) if order is None else np.asarray(order)
    step = np.empty(len(x), dtype=np.int64)
    step[order] = np.arange(len(order))
    groups = [order] if labels is None else [order[labels[order] == c] for c in np.unique(labels)]
    kept_all: list[int] = []
    dropped: dict[str, str] = {}
    for g in groups:
        kept: list[int] = []
        for i in g:
            if kept:
                sims = x[kept] @ x[i]
                j = int(np.argmax(sims))
                if sims[j] >= threshold:
                    dropped[ids[i]] = ids[kept[j]]
                    continue
            kept.append(int(i))
        kept_all += kept
    return np.array(sorted(kept_all, key=lambda i: step[i]), dtype=np.int64), dropped


def pick(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    """Every non-duplicate (or the first ``cfg.budget`` of them), walking in input order or best first by ``cfg.by``."""
    if features is None:
        raise UsageError("--method dedup needs --features (embeddings)")
    n = len(table)
    ids = table["id"].tolist()
    order = None
    if cfg.by is not None:
        if cfg.by not in table:
            raise UsageError(f"no score column {cfg.by!r} to order dedup by")
        r = rank(ids, table[cfg.by].to_numpy(), direction=direction(cfg.by, cfg.direction))
        order = np.argsort(np.where(r > 0, r, np.iinfo(np.int64).max), kind="stable")
    labels = None
    if n > CLUSTER_ABOVE:
        labels = kmeans(features, cfg.clusters, seed=cfg.seed, backend=cfg.kmeans, sample=cfg.kmeans_sample,
                        executor=executor)
    pos, dropped = dedup(features, ids, threshold=cfg.threshold, labels=labels, order=order)
    if cfg.budget is not None:
        pos = pos[:budget_count(cfg.budget, n)]
    walk = f", walking best first by {cfg.by}" if cfg.by else ""
    score = table[cfg.by].to_numpy()[pos] if cfg.by else np.full(len(pos), np.nan)
    return Picked(pos, [f"no kept example with cosine >= {cfg.threshold}{walk}"] * len(pos), score,
                  {"duplicate_of": [dropped.get(i) for i in ids]})

"""Per-cluster selection (learning-percentage paper §3): k-means on embeddings, then each cluster's top or
bottom share by a score, with an exact total budget by largest-remainder apportionment (the reference code
rounds per cluster and overshoots its budget; this does not)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from siftlm.backends import Executor, fetch, here
from siftlm.config import SelectConfig
from siftlm.errors import UsageError
from siftlm.scores import direction
from siftlm.select.picked import CannotSelect, Picked
from siftlm.select.topk import budget_count, rank

ASSIGN_ROWS = 65536        # rows per assignment task (one Ray task each with --backend ray)


def _assign(centroids, x: np.ndarray) -> np.ndarray:
    """Nearest centroid (L2) of every row, exact (a flat faiss index)."""
    import faiss

    centroids = fetch(centroids)
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1][:, 0].astype(np.int64)


def kmeans(features, n_clusters: int | None = None, *, per_cluster: int = 50, seed: int = 0,
           backend: str = "sklearn", sample: int | None = None, executor: Executor | None = None) -> np.ndarray:
    """Cluster labels; default k = N / ``per_cluster`` (the paper's ~50 per cluster).

    ``backend``: "sklearn" (scikit-learn's KMeans, k-means++ init) or "faiss" (much faster at N ~ 1M and
    k ~ 20k; ``pip install siftlm[faiss]``): centroids trained on a seeded random ``sample`` of the rows (default
    min(N, 256 k): faiss would subsample to 256 per centroid itself), then every row assigned to its nearest
    centroid in chunks of ``ASSIGN_ROWS``, as tasks of ``executor`` (default: this process). Both are seeded.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    k = min(n_clusters or max(1, round(len(x) / per_cluster)), len(x))
    if backend == "faiss":
        import faiss

        rows = min(len(x), sample or 256 * k)
        train = x if rows >= len(x) else x[np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))]
        km = faiss.Kmeans(x.shape[1], k, niter=25, nredo=5, seed=seed, verbose=False,  # 5 restarts: no k-means++ init
                          max_points_per_centroid=max(256, -(-rows // k)))
        km.train(train)
        chunks = [x[i:i + ASSIGN_ROWS] for i in range(0, len(x), ASSIGN_ROWS)]
        ex = executor or here()
        centroids = ex.share(km.centroids)
        return np.concatenate(ex.map_tasks(_assign, [(centroids, c) for c in chunks]))
    if backend != "sklearn":
        raise UsageError(f"unknown k-means backend {backend!r}; known: sklearn, faiss")
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, random_state=seed, n_init="auto").fit_predict(x)


def apportion(sizes, k: int) -> np.ndarray:
    """Largest-remainder apportionment of ``k`` picks over clusters proportional to ``sizes``; sums to k exactly.

    Remainder ties go to the lower cluster index. Never gives a cluster more than its size.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if not 0 <= k <= sizes.sum():
        raise CannotSelect(f"budget {k} must be between 0 and {sizes.sum()}")
    quota = k * sizes / sizes.sum()
    base = np.floor(quota).astype(np.int64)
    left = k - base.sum()
    order = np.lexsort((np.arange(len(sizes)), -(quota - base)))
    base[order[:left]] += 1
    return base


def per_cluster(ids, labels, k: int, *, scores=None, direction: str = "high", seed: int = 0) -> np.ndarray:
    """Positions picked: each cluster's share by ``scores`` (top by ``direction``), or at random when
    ``scores`` is None (cluster-random). Exactly ``k`` positions, grouped by cluster."""
    ids = np.asarray(ids, dtype=str)
    labels = np.asarray(labels)
    clusters = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in clusters]
    quotas = apportion([len(m) for m in members], k)
    rng = np.random.default_rng(seed)
    picked = []
    for m, q in zip(members, quotas, strict=True):
        if q == 0:
            continue
        if scores is None:
            picked.append(np.sort(rng.choice(m, size=q, replace=False)))
        else:
            r = rank(ids[m], np.asarray(scores, dtype=np.float64)[m], direction=direction)
            ok = r > 0
            if ok.sum() < q:
                raise CannotSelect(f"cluster {labels[m[0]]}: needs {q} picks but has {int(ok.sum())} finite scores")
            picked.append(m[np.argsort(np.where(ok, r, np.iinfo(np.int64).max), kind="stable")[:q]])
    return np.concatenate(picked) if picked else np.array([], dtype=np.int64)


def _pick(table: pd.DataFrame, features, cfg: SelectConfig, *, by: str | None, executor: Executor | None) -> Picked:
    if features is None:
        raise UsageError(f"--method {cfg.method} needs --features (e.g. sentence embeddings from "
                         "`siftlm signals --pass embed --out emb.parquet`)")
    n = len(table)
    k = budget_count(cfg.budget, n)
    labels = kmeans(features, cfg.clusters, seed=cfg.seed, backend=cfg.kmeans, sample=cfg.kmeans_sample,
                    executor=executor)
    how = direction(by, cfg.direction) if by else None
    scores = table[by].to_numpy() if by else None
    pos = per_cluster(table["id"].tolist(), labels, k, scores=scores, direction=how or "high", seed=cfg.seed)
    sizes = dict(zip(*np.unique(labels, return_counts=True), strict=True))
    quota = dict(zip(sorted(sizes), apportion([sizes[c] for c in sorted(sizes)], k), strict=True))
    what = f"{how}est {by}" if by else f"random (seed {cfg.seed})"
    reasons = [f"cluster {labels[p]} (size {sizes[labels[p]]}, quota {quota[labels[p]]}): {what}"
               + (f" {by}={scores[p]:.4g}" if by else "") for p in pos]
    return Picked(pos, reasons, scores[pos] if by else np.full(len(pos), np.nan), {"cluster": labels},
                  _warning(len(sizes), sum(q == 0 for q in quota.values()), n, k, cfg.clusters))


def _warning(n_clusters: int, empty: int, n: int, k: int, asked: int | None) -> str:
    """Why a per-cluster selection may not be what the user expects, or ''."""
    if n_clusters < 2:
        how = "as asked" if asked else f"the default N / 50 for {n} examples"
        return f"k-means made {n_clusters} cluster ({how}): this is plain {'top-k' if k else 'selection'}; pass --clusters"
    if empty:
        return (f"{empty} of {n_clusters} clusters get no pick: the budget ({k}) is too small for that many clusters; "
                "lower --clusters or raise --budget")
    return ""


def pick_cluster(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    """k-means clusters of ``features``; each cluster's share of the budget by ``cfg.by`` (LP paper §3)."""
    return _pick(table, features, cfg, by=cfg.by, executor=executor)


def pick_cluster_random(table: pd.DataFrame, features, cfg: SelectConfig, *, executor: Executor | None = None) -> Picked:
    """k-means clusters of ``features``; each cluster's share of the budget at random (cluster-random baseline)."""
    return _pick(table, features, cfg, by=None, executor=executor)

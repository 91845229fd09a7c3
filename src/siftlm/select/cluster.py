"""Per-cluster selection (learning-percentage paper §3): k-means on embeddings, then each cluster's top or
bottom share by a score, with an exact total budget by largest-remainder apportionment (the reference code
rounds per cluster and overshoots its budget; this does not)."""

from __future__ import annotations

import numpy as np

from siftlm.select.topk import rank


def kmeans(features, n_clusters: int | None = None, *, per_cluster: int = 50, seed: int = 0,
           backend: str = "sklearn") -> np.ndarray:
    """Cluster labels; default k = N / ``per_cluster`` (the paper's ~50 per cluster).

    ``backend``: "sklearn" (scikit-learn's KMeans, k-means++ init) or "faiss" (much faster at N ~ 1M and
    k ~ 20k; ``pip install siftlm[faiss]``). Both are seeded.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    k = min(n_clusters or max(1, round(len(x) / per_cluster)), len(x))
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(x.shape[1], k, niter=25, nredo=5, seed=seed, verbose=False)  # 5 restarts: no k-means++ init
        km.train(x)
        return km.index.search(x, 1)[1][:, 0].astype(np.int64)
    if backend != "sklearn":
        raise ValueError(f"unknown k-means backend {backend!r}; known: sklearn, faiss")
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, random_state=seed, n_init="auto").fit_predict(x)


def apportion(sizes, k: int) -> np.ndarray:
    """Largest-remainder apportionment of ``k`` picks over clusters proportional to ``sizes``; sums to k exactly.

    Remainder ties go to the lower cluster index. Never gives a cluster more than its size.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if not 0 <= k <= sizes.sum():
        raise ValueError(f"budget {k} must be between 0 and {sizes.sum()}")
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
                raise ValueError(f"cluster {labels[m[0]]}: needs {q} picks but has {int(ok.sum())} finite scores")
            picked.append(m[np.argsort(np.where(ok, r, np.iinfo(np.int64).max), kind="stable")[:q]])
    return np.concatenate(picked) if picked else np.array([], dtype=np.int64)


def random_subset(n: int, k: int, *, seed: int = 0) -> np.ndarray:
    """Uniform random positions, seeded (the random baseline)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))

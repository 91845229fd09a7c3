"""Benchmark: greedy MAP DPP with on-the-fly kernel rows vs a numpy implementation on a precomputed N x N kernel.

The baseline is the fast-map-dpp style loop (Chen et al. 2018 as usually shipped): build the full RBF kernel,
then the same incremental Cholesky update reading kernel rows from it. Each variant runs in its own process
so its peak memory (ru_maxrss above the process's RSS before the algorithm) is measured separately.

    python bench/dpp.py --n 10000 --d 256 --m 1000 --compare     # side by side, same picks?
    python bench/dpp.py --n 100000 --d 256 --m 5000              # ours alone at scale
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import resource
import time

import numpy as np

from _common import save_result


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def features(n: int, d: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_dense(x: np.ndarray, m: int, gamma: float, eps: float = 1e-10) -> list[int]:
    sq = (x * x).sum(1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * (x @ x.T), 0)   # N x N
    np.fill_diagonal(dist2, 0)                                           # exact: K_ii = 1
    kernel = np.exp(-gamma * dist2)
    cis = np.zeros((m, len(x)), dtype=x.dtype)
    di2s = np.copy(np.diag(kernel))
    selected = [int(np.argmax(di2s))]
    while len(selected) < m:
        k = len(selected) - 1
        i = selected[-1]
        eis = (kernel[i, :] - cis[:k, i] @ cis[:k, :]) / math.sqrt(di2s[i])
        cis[k, :] = eis
        di2s -= np.square(eis)
        di2s[i] = -np.inf
        nxt = int(np.argmax(di2s))
        if di2s[nxt] < eps:
            break
        selected.append(nxt)
    return selected


def ours(x: np.ndarray, m: int, gamma: float) -> list[int]:
    import torch

    from siftlm.select.dpp import greedy_map

    dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    return greedy_map(x, m, gamma=gamma, dtype=dtype).order.tolist()


def _worker(name, n, d, m, gamma, float64, q):
    x = features(n, d, dtype=np.float64 if float64 else np.float32)
    import torch  # noqa: F401  (imported before measuring, like the library would be)

    before = _rss_bytes()
    t = time.perf_counter()
    picks = (numpy_dense if name == "numpy-dense" else ours)(x, m, gamma)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    q.put({"variant": name, "seconds": round(dt, 2), "peak_extra_bytes": max(0, peak - before), "picks": picks})


def run(name, n, d, m, gamma, float64):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(name, n, d, m, gamma, float64, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--gamma", type=float, default=1.0)
    ap.add_argument("--compare", action="store_true", help="also run the dense numpy baseline")
    ap.add_argument("--float64", action="store_true", help="both variants in float64 (exact same-picks check)")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    n, d, m = args.n, args.d, args.m
    width = 8 if args.float64 else 4
    limit = 1.5 * n * (m + d) * width + n * d * width
    results = [run("siftlm", n, d, m, args.gamma, args.float64)]
    if args.compare:
        results.append(run("numpy-dense", n, d, m, args.gamma, args.float64))
    for r in results:
        mib = r["peak_extra_bytes"] / 2**20
        print(f"{r['variant']:12s} {r['seconds']:9.1f} s   peak +{mib:9.1f} MiB   picks {len(r['picks'])}")
    summary = {"n": n, "d": d, "m": m, "gamma": args.gamma, "float64": args.float64, "memory_limit_bytes": int(limit),
               "siftlm_within_limit": results[0]["peak_extra_bytes"] <= limit,
               "results": [{k: v for k, v in r.items() if k != "picks"} for r in results]}
    print(f"limit 1.5*N*(M+D)*4 + features = {limit / 2**20:.1f} MiB; siftlm within: {summary['siftlm_within_limit']}")
    if args.compare:
        a, b = results
        summary["same_picks"] = a["picks"] == b["picks"]
        summary["same_prefix"] = next((i for i, (u, v) in enumerate(zip(a["picks"], b["picks"], strict=False)) if u != v),
                                      min(len(a["picks"]), len(b["picks"])))
        summary["set_overlap"] = round(len(set(a["picks"]) & set(b["picks"])) / max(1, len(a["picks"])), 4)
        summary["time_ratio_numpy_over_siftlm"] = round(b["seconds"] / a["seconds"], 2)
        summary["memory_ratio_numpy_over_siftlm"] = round(b["peak_extra_bytes"] / max(1, a["peak_extra_bytes"]), 2)
        print(f"same picks: {summary['same_picks']} (identical first {summary['same_prefix']}, "
              f"set overlap {summary['set_overlap']})   time ratio (numpy/siftlm): "
              f"{summary['time_ratio_numpy_over_siftlm']}x   memory ratio: {summary['memory_ratio_numpy_over_siftlm']}x")
    save_result(args.out, f"dpp-n{n}-m{m}{'-f64' if args.float64 else ''}", summary)


if __name__ == "__main__":
    main()

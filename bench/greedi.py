"""Benchmark: distributed DPP (GreeDi, two-round partitioned greedy) against centralised greedy MAP.

Features: N points in D dimensions drawn around 64 random centres (unit-normalised, an RBF kernel with gamma),
the shape of embedding data; the same for every variant. For each variant: wall time, log det L_S of the M picks
(the sum of the greedy gains, checked against a direct slogdet), and the ratios

  logdet ratio        log det(GreeDi) / log det(centralised); these are negative here (K_ii = 1), so > 1 is worse
  gain over random    (LD_greedi - LD_random) / (LD_central - LD_random): 1 = as good as centralised, 0 = random

    python bench/greedi.py --n 20000 --d 256 --m 1000 --parts 4,8 [--ray]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from _common import save_result
from siftlm.backends import executor
from siftlm.select import dpp


def features(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, d))
    x = centres[rng.integers(0, 64, n)] + 0.8 * rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--gamma", type=float, default=1.0)
    ap.add_argument("--parts", default="4,8")
    ap.add_argument("--ray", action="store_true", help="also run the parts as Ray tasks on a local cluster")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    x = features(args.n, args.d)
    zero = np.zeros(args.n)
    res = {"n": args.n, "d": args.d, "m": args.m, "gamma": args.gamma}

    rand = np.random.default_rng(1).choice(args.n, args.m, replace=False)
    ld_rand = dpp.logdet_of(x, zero, rand, args.gamma)
    t = time.perf_counter()
    central = dpp.greedy_map(x, args.m, gamma=args.gamma)
    res["central_s"] = round(time.perf_counter() - t, 1)
    ld_c = float(central.gains.sum())
    res.update(logdet_random=round(ld_rand, 2), logdet_central=round(ld_c, 2),
               logdet_central_direct=round(dpp.logdet_of(x, zero, central.order, args.gamma), 2))
    print(f"{'variant':22s}{'seconds':>9s}{'log det':>11s}{'ratio':>8s}{'vs random':>11s}{'overlap':>9s}")
    print(f"{'random subset':22s}{'':>9s}{ld_rand:11.1f}")
    print(f"{'centralised greedy':22s}{res['central_s']:9.1f}{ld_c:11.1f}{1:8.3f}{1:11.3f}{1:9.3f}")
    modes = ["local"] + (["ray"] if args.ray else [])
    if args.ray:
        from siftlm.backends import ray as ray_backend

        ray_backend.init()                       # the cluster's start-up is not charged to GreeDi
        res["ray_cpus"] = ray_backend.resources()[1]
    for parts in [int(p) for p in args.parts.split(",")]:
        for mode in modes:
            t = time.perf_counter()
            g = dpp.greedi(x, args.m, parts=parts, gamma=args.gamma, executor=executor(mode))
            secs = time.perf_counter() - t
            ld = float(g.gains.sum())
            key = f"greedi_{parts}_{mode}"
            res[key] = {"s": round(secs, 1), "logdet": round(ld, 2), "logdet_ratio": round(ld / ld_c, 4),
                        "gain_over_random": round((ld - ld_rand) / (ld_c - ld_rand), 4),
                        "overlap": round(len(set(g.order) & set(central.order)) / args.m, 3), "union": g.settings["union"]}
            r = res[key]
            print(f"{f'GreeDi {parts} parts ({mode})':22s}{secs:9.1f}{ld:11.1f}{r['logdet_ratio']:8.3f}"
                  f"{r['gain_over_random']:11.3f}{r['overlap']:9.3f}")
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    save_result(args.out, f"greedi-{args.n}-{args.d}-{args.m}", res)


if __name__ == "__main__":
    main()

"""Benchmark: a model pass on the Ray backend against the local backend, same data, same store layout.

Each backend computes the pass into its own fresh store; the Ray cluster is started before timing (its start-up is
printed apart). On one machine the actors share its cores (one actor per CPU, one thread each, against one process
with every thread), so the ratio shows the backend's overhead here; the gain is on a cluster of GPU nodes.

    python bench/ray_pass.py --n 64 --pass loss
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from _common import save_result, slug
from siftlm.assets import demo_data
from siftlm.backends import ray as ray_backend
from siftlm.config import GradConfig, SignalConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model
from siftlm.recipes.runtime import runtime_for
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import prepare


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--pass", dest="name", default="loss")
    ap.add_argument("--shard-size", type=int, default=8)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    lm = load_model(args.model, dtype="float32")
    ds = read_dataset(demo_data("alpaca_en_demo"))
    t = time.perf_counter()
    ray_backend.init()
    start_s = time.perf_counter() - t
    gpus, cpus = ray_backend.resources()
    res = {"model": args.model, "pass": args.name, "n": args.n, "ray_start_s": round(start_s, 1), "ray_cpus": cpus,
           "ray_gpus": gpus}
    frames = {}
    for backend in ("local", "ray"):
        with tempfile.TemporaryDirectory() as store:
            cfg = SignalConfig(store=store, limit=args.n, max_length=512, shard_size=args.shard_size, progress=False,
                               backend=backend)
            prep = prepare(ds, lm.tokenizer, cfg)
            tokens = sum(len(e.input_ids) for e in prep.encoded)
            t = time.perf_counter()
            frames[backend] = run_pass(prep, args.name, lm, runtime=runtime_for(cfg), options={"grad": GradConfig()})
            secs = time.perf_counter() - t
            res[f"{backend}_s"], res[f"{backend}_tok_s"] = round(secs, 1), round(tokens / secs, 1)
    col = "loss" if "loss" in frames["local"] else "vector"
    a, b = (np.stack(frames[k][col].to_numpy()) for k in ("local", "ray"))
    res["max_abs_diff"] = float(np.abs(a - b).max())
    res["ratio_ray_over_local"] = round(res["local_s"] / res["ray_s"], 2)
    print(f"ray start-up {start_s:.1f} s ({cpus} CPUs, {gpus} GPUs); local {res['local_s']} s ({res['local_tok_s']} tok/s), "
          f"ray {res['ray_s']} s ({res['ray_tok_s']} tok/s), ratio {res['ratio_ray_over_local']}, max |diff| "
          f"{res['max_abs_diff']:.2e}")
    save_result(args.out, f"ray_pass-{slug(args.model)}-{args.name}", res)


if __name__ == "__main__":
    main()

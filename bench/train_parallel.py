"""Benchmark: siftlm's training loop data-parallel over 1 and N processes, side by side in one run.

For each world size it launches ``torchrun --nproc_per_node W bench/train_parallel.py --worker ...``: every rank
loads the model and the data, the loop trains one LoRA epoch on the same global token-budget batches, and rank 0
writes the training time. Reported: tokens/s (real tokens of the epoch / training seconds), the speedup over one
process and the scaling efficiency (speedup / W), the per-rank token imbalance of the split (the mean over global
batches of the largest rank's padded tokens / the mean rank's: 1.0 is perfect; the slowest rank sets the step), and
on CUDA the MFU (6 x trainable-and-frozen parameters x tokens / time / peak, an upper-bound convention for LoRA).

    python bench/train_parallel.py --model builtin:smollm2 --examples 48 --worlds 1,2          # 2 CPU cores: expect ~1x
    python bench/train_parallel.py --model <a 1B model folder> --examples 4000 --worlds 1,2,4,8 \
        --token-budget 16384 --peak-tflops 989
                                                                                        # 8 GPUs: the >= 0.9 x N goal
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import cpu_record, save_result, slug
from siftlm.assets import demo_data
from siftlm.config import SignalConfig, TrainConfig
from siftlm.data import read_dataset
from siftlm.keyed import open_keyed
from siftlm.models.batching import plan_batches
from siftlm.models.load import load_model
from siftlm.signals.prepare import prepare
from siftlm.train.dist import imbalance, ranks
from siftlm.train.loop import train


def worker(args) -> None:
    """One rank: train one epoch, rank 0 writes {seconds, tokens, world} to --result."""
    rk = ranks()
    lm = load_model(args.model, dtype=args.dtype, quiet=True)
    ds = read_dataset(demo_data("alpaca_en_demo"))
    prep = prepare(ds, lm.tokenizer, SignalConfig(limit=args.examples, max_length=512, progress=False))
    tokens = sum(len(e.input_ids) for e in prep.encoded)
    cfg = TrainConfig(epochs=1, lr=1e-3, token_budget=args.token_budget)
    rk.barrier()
    t = time.perf_counter()
    train(lm, prep.encoded, open_keyed(args.out, {"bench": "train_parallel"}, what="a bench"),
          cfg, pad_id=lm.tokenizer.pad_token_id)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    rk.barrier()
    secs = time.perf_counter() - t
    if rk.main:
        lengths = [len(e.input_ids) for e in prep.encoded]
        batches = plan_batches(lengths, cfg.token_budget)
        imb = sum(imbalance(b, lengths, rk.world) for b in batches) / len(batches)
        params = sum(p.numel() for p in lm.model.parameters())
        Path(args.result).write_text(json.dumps({"world": rk.world, "seconds": secs, "tokens": tokens,
                                                 "batches": len(batches), "imbalance": imb, "params": params,
                                                 "device": str(next(lm.model.parameters()).device)}))


def launch(args, world: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", str(world),
               __file__, "--worker", "--model", args.model, "--examples", str(args.examples),
               "--token-budget", str(args.token_budget),
               "--dtype", args.dtype, "--out", str(Path(tmp) / "train"), "--result", str(result)]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // world))})
        return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:smollm2")
    p.add_argument("--examples", type=int, default=48)
    p.add_argument("--worlds", default="1,2")
    p.add_argument("--token-budget", type=int, default=2048)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--peak-tflops", type=float, default=None, help="one device's peak, for the MFU (GPUs)")
    p.add_argument("--out-dir", default="bench/out")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--out")
    p.add_argument("--result")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    rows = [launch(args, int(w)) for w in args.worlds.split(",")]
    base = rows[0]["tokens"] / rows[0]["seconds"]
    print(f"{'world':>6}{'seconds':>10}{'tokens/s':>12}{'speedup':>9}{'efficiency':>12}{'imbalance':>11}")
    for r in rows:
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["speedup"] = r["tokens_per_s"] / base
        r["efficiency"] = r["speedup"] / r["world"] * rows[0]["world"]
        if args.peak_tflops:
            r["mfu"] = 6 * r["params"] * r["tokens_per_s"] / (args.peak_tflops * 1e12 * r["world"])
        print(f"{r['world']:>6}{r['seconds']:>10.1f}{r['tokens_per_s']:>12.1f}{r['speedup']:>9.2f}{r['efficiency']:>12.2f}"
              f"{r['imbalance']:>11.3f}" + (f"  MFU {100 * r['mfu']:.1f} %" if "mfu" in r else ""))
    save_result(args.out_dir, f"train_parallel-{slug(args.model)}",
                {"model": args.model, "examples": args.examples, "token_budget": args.token_budget, "dtype": args.dtype,
                 "rows": rows, **cpu_record()})


if __name__ == "__main__":
    main()

"""Benchmark: `siftlm dpo --loss davir` against `--loss sigmoid` on the same pairs, then DavIR Table 3.

Both losses train the same LoRA policy with TRL's DPOTrainer on the same real dpo_en_demo pairs (same seed,
same order, same steps); runs alternate (sigmoid, davir, sigmoid, davir) so drift in machine speed hits
both. Per-step wall time is taken by a callback, median over steps after the first. The normalisation
(one multiply per token by a per-sequence constant) should cost under 5 %.

Then the length analysis of each trained policy: per-pair objective of every loss type against the
response-length difference on all pairs (`siftlm analyze dpo-length` computes the same).

    python bench/dpo.py --n 64 --steps 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from _common import cpu_record, save_result
from siftlm.assets import demo_data
from siftlm.config import DPOTrainConfig, SignalConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model
from siftlm.recipes.dpo_length import length_table
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import prepare_pairs
from siftlm.signals.table import pair_table
from siftlm.train.dpo import train_dpo
from siftlm.train.dpo_losses import default_beta


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=64, help="pairs")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="siftlm-bench-dpo-"))
    cfg = SignalConfig(store=str(work / "store"), limit=args.n, max_length=args.max_length, progress=False)
    lm = load_model(args.model)
    prep = prepare_pairs(read_dataset(demo_data("dpo_en_demo")), lm.tokenizer, cfg)
    ref = run_pass(prep, "pairs", lm)
    runs: dict[str, list[dict]] = {"sigmoid": [], "davir": []}
    adapters: dict[str, Path] = {}
    for rep in range(args.reps):
        for loss in ("sigmoid", "davir"):
            lm = load_model(args.model)                       # TRL injects LoRA into the model it trains: start fresh
            timer = StepTimer()
            out = work / f"{loss}-{rep}"
            s = train_dpo(lm, prep, ref, out, DPOTrainConfig(loss=loss, max_steps=args.steps, batch_size=args.batch_size,
                                                            lr=args.lr, save_steps=10_000, seed=0), callbacks=[timer])
            logs = [h for h in s["log_history"] if "loss" in h]
            runs[loss].append({"step_s": float(np.median(timer.times[1:])), "tokens": logs[-1]["num_tokens"],
                               "runtime": s["metrics"]["train_runtime"], "losses": [h["loss"] for h in logs],
                               "beta": s["beta"]})
            adapters[loss] = Path(s["final"])
    res = {"model": args.model, **cpu_record(), "threads": torch.get_num_threads(),
           "n_pairs": len(prep.encoded), "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
           "beta_sigmoid": runs["sigmoid"][0]["beta"], "beta_davir": runs["davir"][0]["beta"],
           "beta_davir_rule": f"{default_beta('davir', ref['chosen_logp'], ref['rejected_logp']):.4g} "
                              "= 0.1 x median |log pi_ref|"}
    for loss, rs in runs.items():
        step = min(r["step_s"] for r in rs)
        res[f"{loss}_step_s"] = round(step, 4)
        res[f"{loss}_step_s_all"] = [round(r["step_s"], 4) for r in rs]
        res[f"{loss}_tok_s"] = round(max(r["tokens"] / r["runtime"] for r in rs), 1)
        res[f"{loss}_first_last_loss"] = [round(rs[0]["losses"][0], 4), round(rs[0]["losses"][-1], 4)]
    res["davir_overhead"] = round(res["davir_step_s"] / res["sigmoid_step_s"] - 1, 4)

    tables = {}
    for loss, adapter in adapters.items():
        pol = run_pass(prep, "pairs", load_model(args.model, adapter=str(adapter)))    # the policy: base + adapter
        t = length_table(pair_table(ref, pol), beta=0.1)[0]
        tables[loss] = t
        res[f"table3_after_{loss}"] = {r["loss"]: round(float(r["pearson"]), 3) for _, r in t.iterrows()}
    print(f"{'':24s}{'sigmoid':>12s}{'davir':>12s}")
    print(f"{'s / step (best rep)':24s}{res['sigmoid_step_s']:12.3f}{res['davir_step_s']:12.3f}")
    print(f"{'tokens / s':24s}{res['sigmoid_tok_s']:12.1f}{res['davir_tok_s']:12.1f}")
    print(f"davir normalisation overhead: {100 * res['davir_overhead']:+.1f} %")
    for loss, t in tables.items():
        print(f"\nPearson(per-pair objective, chosen - rejected tokens) after {args.steps} steps of --loss {loss}:")
        print(t.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    save_result(args.out, "dpo-smollm2-cpu", res)


if __name__ == "__main__":
    main()

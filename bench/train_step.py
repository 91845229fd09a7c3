"""Benchmark: one LoRA training epoch with siftlm's loop against a per-example Hugging Face loop, side by side.

siftlm (``siftlm.train.loop.train``): token-budget batches from length buckets, the loss from the
output layer at response positions only. The naive loop: batch size 1, ``model(input_ids, labels=labels)``
(full logits, HF loss), gradients accumulated over the same number of examples per optimizer step.
Both start from the same LoRA initialisation on the same real alpaca_en_demo examples.

    python bench/train_step.py --model builtin:smollm2 --n 64
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from scipy import stats

from _common import cpu_record, save_result, slug
from siftlm.assets import demo_data
from siftlm.config import SignalConfig, TrainConfig
from siftlm.data import read_dataset
from siftlm.keyed import open_keyed
from siftlm.models.batching import plan_batches
from siftlm.models.load import load_model
from siftlm.signals.prepare import prepare
from siftlm.train.loop import train


def naive_epoch(model, encoded, per_step: int, lr: float) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    device = next(model.parameters()).device
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for i, e in enumerate(encoded):
        out = model(input_ids=torch.tensor([e.input_ids], device=device), labels=torch.tensor([e.labels], device=device))
        (out.loss / per_step).backward()
        if (i + 1) % per_step == 0 or i == len(encoded) - 1:
            opt.step()
            opt.zero_grad(set_to_none=True)


def trajectory_agreement(model: str, n: int, store: str) -> dict:
    """Spearman between the fp32 and the bf16 rankings of LP(1), LP_app(1) and DavIR from a 2-epoch LoRA reference."""
    from siftlm.config import RunConfig
    from siftlm.recipes.davir import score_dataset

    tables = {}
    for dtype in ("float32", "bfloat16"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = RunConfig(data=str(demo_data("alpaca_en_demo")), model=model, out=tmp, ifd=False,
                            signals=SignalConfig(limit=n, max_length=512, store=f"{store}/{dtype}", dtype=dtype),
                            train=TrainConfig(epochs=2, lr=1e-3, token_budget=1024))
            tables[dtype] = score_dataset(cfg)[1]
    return {k: round(float(stats.spearmanr(tables["float32"][k], tables["bfloat16"][k], nan_policy="omit").statistic), 4)
            for k in ("lp", "lp_app", "davir")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--token-budget", type=int, default=1024, help="padded tokens per step (siftlm)")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="siftlm's loop in each of these precisions")
    ap.add_argument("--agreement", type=int, default=0, help="also train 2-epoch references on this many examples in "
                                                             "fp32 and bf16 and compare the LP, LP_app, DavIR rankings")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()

    lm = load_model(args.model, device="cpu", dtype="float32")
    prep = prepare(read_dataset(demo_data("alpaca_en_demo")), lm.tokenizer,
                   SignalConfig(limit=args.n, max_length=512, progress=False))
    enc = prep.encoded
    tokens = sum(len(e.input_ids) for e in enc)
    n_steps = len(plan_batches([len(e.input_ids) for e in enc], args.token_budget))
    per_step = max(1, round(len(enc) / n_steps))

    torch.manual_seed(0)
    t = time.perf_counter()
    naive_epoch(load_model(args.model, device="cpu", dtype="float32").model, enc, per_step, 1e-3)
    t_naive = time.perf_counter() - t

    res = {"model": args.model, **cpu_record(),
           "n_examples": len(enc), "real_tokens": tokens, "optimizer_steps": n_steps, "examples_per_step": per_step,
           "naive_s": round(t_naive, 2), "naive_tok_s": round(tokens / t_naive, 1)}
    print(f"{'':26s}{'seconds':>10s}{'real tok/s':>12s}{'vs loop':>9s}")
    print(f"{'per-example loop (fp32)':26s}{t_naive:10.1f}{tokens / t_naive:12.1f}{1:9.2f}")
    for dtype in args.dtypes.split(","):
        handle = load_model(args.model, device="cpu", dtype=dtype)
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            train(handle, enc, open_keyed(tmp, {"bench": dtype}, what="a benchmark"),
                  TrainConfig(epochs=1, lr=1e-3, token_budget=args.token_budget), pad_id=lm.tokenizer.pad_token_id)
            secs = time.perf_counter() - t
        res[f"siftlm_{dtype}_s"], res[f"siftlm_{dtype}_tok_s"] = round(secs, 2), round(tokens / secs, 1)
        res[f"ratio_{dtype}"] = round(t_naive / secs, 2)
        print(f"{'siftlm train ' + dtype:26s}{secs:10.1f}{tokens / secs:12.1f}{t_naive / secs:9.2f}")
    if "siftlm_float32_s" in res and "siftlm_bfloat16_s" in res:
        res["bf16_speedup"] = round(res["siftlm_float32_s"] / res["siftlm_bfloat16_s"], 2)
        print(f"bf16 vs fp32 (LoRA epoch): {res['bf16_speedup']:.2f}x")
    if args.agreement:
        with tempfile.TemporaryDirectory() as store:
            res["trajectory_spearman_fp32_vs_bf16"] = trajectory_agreement(args.model, args.agreement, store)
        print(f"rank agreement fp32 vs bf16 ({args.agreement} examples, 2 epochs): {res['trajectory_spearman_fp32_vs_bf16']}")
    save_result(args.out, f"train_step-{slug(args.model)}", res)


if __name__ == "__main__":
    main()

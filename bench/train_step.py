"""Benchmark: one LoRA training epoch with siftlm's loop against a per-example Hugging Face loop, side by side.

siftlm (``siftlm.signals.trajectory.train``): token-budget batches from length buckets, the loss from the
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

from _common import save_result, slug
from siftlm.assets import demo_data
from siftlm.config import SignalConfig, TrainConfig
from siftlm.data import read_dataset
from siftlm.models.batching import plan_batches
from siftlm.models.load import load_model
from siftlm.signals.prepare import prepare
from siftlm.signals.trajectory import train


def naive_epoch(model, encoded, per_step: int, lr: float) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for i, e in enumerate(encoded):
        out = model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels]))
        (out.loss / per_step).backward()
        if (i + 1) % per_step == 0 or i == len(encoded) - 1:
            opt.step()
            opt.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--token-budget", type=int, default=1024, help="padded tokens per step (siftlm)")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()

    lm = load_model(args.model, device="cpu")
    prep = prepare(read_dataset(demo_data("alpaca_en_demo")), lm.tokenizer,
                   SignalConfig(limit=args.n, max_length=512, progress=False))
    enc = prep.encoded
    tokens = sum(len(e.input_ids) for e in enc)
    n_steps = len(plan_batches([len(e.input_ids) for e in enc], args.token_budget))
    per_step = max(1, round(len(enc) / n_steps))

    torch.manual_seed(0)
    t = time.perf_counter()
    naive_epoch(load_model(args.model, device="cpu").model, enc, per_step, 1e-3)
    t_naive = time.perf_counter() - t

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        train(lm.model, lm.fingerprint, enc, tmp, TrainConfig(epochs=1, lr=1e-3, token_budget=args.token_budget),
              pad_id=lm.tokenizer.pad_token_id, evaluate=lambda *a: None)
        t_ours = time.perf_counter() - t

    res = {"model": args.model, "n_examples": len(enc), "real_tokens": tokens, "optimizer_steps": n_steps,
           "examples_per_step": per_step, "naive_s": round(t_naive, 2), "siftlm_s": round(t_ours, 2),
           "naive_tok_s": round(tokens / t_naive, 1), "siftlm_tok_s": round(tokens / t_ours, 1),
           "ratio": round(t_naive / t_ours, 2)}
    print(f"{'':22s}{'per-example loop':>18s}{'siftlm train':>14s}")
    print(f"{'seconds (1 epoch)':22s}{t_naive:18.1f}{t_ours:14.1f}")
    print(f"{'real tokens / s':22s}{res['naive_tok_s']:18.1f}{res['siftlm_tok_s']:14.1f}")
    print(f"ratio: {res['ratio']:.2f}x  ({n_steps} optimizer steps of ~{per_step} examples)")
    save_result(args.out, f"train_step-{slug(args.model)}", res)


if __name__ == "__main__":
    main()

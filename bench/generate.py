"""Benchmark: siftlm's batched generation (`siftlm evaluate --generate`) against one `generate` call per prompt.

Both answer the same first `--n` AlpacaEval instructions greedily with the chat template and `--max-new-tokens`;
siftlm left-pads prompts into token-budget batches of similar length (padding waste is reported), the loop calls
`model.generate` with batch size 1. Greedy decoding is deterministic, so the answers should agree; on CPU a
padded batch can change the last bits of a logit and flip a near-tie, so agreement is reported (identical
answers, and identical first 16 tokens) rather than assumed.

    python bench/generate.py --n 64 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from _common import save_result, slug
from siftlm.evaluate.generate import generate, generate_batch
from siftlm.evaluate.sets import load_eval_set
from siftlm.models.load import load_model
from siftlm.models.template import prompt_ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--token-budget", type=int, default=4096)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    lm = load_model(args.model, dtype="float32")
    items = load_eval_set("builtin:alpaca-eval")[: args.n]
    prompts = [prompt_ids(lm.tokenizer, [{"role": "user", "content": i.turns[0]}]) for i in items]

    generate_batch(lm.model, lm.tokenizer, prompts[:1], max_new_tokens=4)            # warm-up
    t = time.perf_counter()
    loop = [generate_batch(lm.model, lm.tokenizer, [p], max_new_tokens=args.max_new_tokens)[0] for p in prompts]
    t_loop = time.perf_counter() - t
    t = time.perf_counter()
    batched = [a[0] for a in generate(lm, items, max_new_tokens=args.max_new_tokens, token_budget=args.token_budget)]
    t_batch = time.perf_counter() - t

    new_tokens = sum(len(lm.tokenizer(a, add_special_tokens=False).input_ids) for a in loop)
    same = sum(a == b for a, b in zip(loop, batched, strict=True))
    head = sum(lm.tokenizer(a).input_ids[:16] == lm.tokenizer(b).input_ids[:16] for a, b in zip(loop, batched, strict=True))
    res = {"model": args.model, "n": len(items), "max_new_tokens": args.max_new_tokens, "token_budget": args.token_budget,
           "threads": torch.get_num_threads(), "loop_s": round(t_loop, 1), "batched_s": round(t_batch, 1),
           "ratio": round(t_loop / t_batch, 2), "loop_new_tok_s": round(new_tokens / t_loop, 1),
           "batched_new_tok_s": round(new_tokens / t_batch, 1), "identical_answers": same,
           "identical_first_16_tokens": head, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(f"{'':26s}{'seconds':>9s}{'new tok/s':>11s}{'vs loop':>9s}")
    print(f"{'batch size 1 loop':26s}{t_loop:9.1f}{res['loop_new_tok_s']:11.1f}{1:9.2f}")
    print(f"{'siftlm batched':26s}{t_batch:9.1f}{res['batched_new_tok_s']:11.1f}{res['ratio']:9.2f}")
    print(f"identical answers {same}/{len(items)}, identical first 16 tokens {head}/{len(items)}")
    save_result(args.out, f"generate-{slug(args.model)}", res)


if __name__ == "__main__":
    main()

"""Benchmark: peak memory (RSS) of every model pass and of a training step, beside the model's own size and an
estimate from a documented formula, each measured in a fresh process.

    python bench/memory.py --model builtin:smollm2
    python bench/memory.py --model builtin:gemma3-270m

The peak is the process's high-water mark (VmHWM, reset through /proc/self/clear_refs after the model is loaded),
so it includes the weights. Formulas (fp32, B = token budget of a batch or step, L layers, H hidden size, Hkv the
key/value width, I the MLP width, V the vocabulary, C the logits chunk):

- a forward pass: weights + C x V x 4 B x 3 (a chunk's logits, their exponentials, statistics) + B x 4 x
  max(3H, 2I) x 4 B (one layer's working set); the goal is at most 2 x weights + 1 GB;
- the grads pass: weights + the activations a training step keeps (below), no weight gradients or optimizer;
- a training step: weights + gradients and AdamW moments of the trained parameters (3 x 4 B each) + B x L x
  (7H + 3Hkv + 4I) x 4 B (what a Llama-style layer keeps for its backward: two norms' inputs and outputs, q, k, v
  before and after RoPE, the attention output, the MLP's gate, up, activation and product) + the logits chunk.
  With gradient checkpointing only the layer inputs are kept: B x L x H x 4 B, plus one layer's activations.
  Training also keeps each layer's attention scores and probabilities for the backward (CPU attention with a
  padding mask runs the unfused path): L x 2 x heads x sum over the batch's sequences of T^2 x 4 B (one layer's
  with checkpointing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import save_result, slug

PASSES = ("loss", "uncond", "lm-embed", "grads")
TRAIN = ("train-lora", "train-lora-checkpointing", "train-full")


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> dict:
    """Runs in a fresh process: load, reset the peak, run one measurement, report."""
    import torch

    from siftlm.assets import demo_data
    from siftlm.config import GradConfig, SignalConfig, TrainConfig
    from siftlm.data import read_dataset
    from siftlm.models.batching import collate, plan_batches
    from siftlm.models.forward import parts, response_nll
    from siftlm.models.load import load_model
    from siftlm.signals.passes import PASSES as PASS_FNS
    from siftlm.signals.prepare import prepare

    torch.manual_seed(0)
    lm = load_model(args.model, device="cpu")
    lm.computing().__enter__()              # the whole measurement runs in the handle's precision, as siftlm does
    prep = prepare(read_dataset(demo_data("alpaca_en_demo")), lm.tokenizer,
                   SignalConfig(limit=args.n, max_length=args.max_length, token_budget=args.token_budget, progress=False))
    cfg = lm.model.config
    n_params = sum(p.numel() for p in lm.model.parameters())
    loaded = _rss_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                        # reset VmHWM: the peak from here on
    t0 = time.perf_counter()
    step_s = []
    if args.what in PASSES:
        compute = PASS_FNS[args.what].bind(lm.model, prep, {"grad": GradConfig()})
        compute(0, len(prep.encoded), lambda n: None)
        budget = args.token_budget
    else:
        tcfg = TrainConfig(full=args.what == "train-full", gradient_checkpointing="checkpointing" in args.what)
        model = lm.model
        if tcfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not tcfg.full:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=tcfg.lora_r, lora_alpha=tcfg.lora_alpha, target_modules="all-linear"))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        model.train()
        lengths = [len(e.input_ids) for e in prep.encoded]
        batches = plan_batches(lengths, tcfg.token_budget)[: args.steps]
        attn_cells = max(len(b) * max(lengths[i] for i in b) ** 2 for b in batches)   # sequences x T^2, largest batch
        for b in batches:                                   # the longest batches first: the peak is in there
            s = time.perf_counter()
            nll, _ = response_nll(model, collate(prep.encoded, b, lm.tokenizer.pad_token_id))
            (nll.sum() / nll.numel()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step_s.append(time.perf_counter() - s)
        budget = tcfg.token_budget
        n_train = sum(p.numel() for p in params)
    seconds = time.perf_counter() - t0
    peak = _rss_mb("VmHWM")
    text = getattr(cfg, "text_config", None) or cfg
    h, inter, layers = text.hidden_size, text.intermediate_size, text.num_hidden_layers
    hkv = text.num_key_value_heads * getattr(text, "head_dim", h // text.num_attention_heads)
    vocab = parts(lm.model).head.weight.shape[0]
    weights = 4 * n_params / 2**20
    chunk = max(64, min(512, (1 << 28) // vocab)) if args.what in PASSES else max(16, min(1024, (1 << 26) // vocab))
    logits = 3 * chunk * vocab * 4 / 2**20
    if args.what in PASSES and args.what != "grads":
        formula = weights + logits + budget * 4 * max(3 * h, 2 * inter) * 4 / 2**20
        goal = f"<= 2 x weights + 1 GB = {2 * weights + 1024:.0f} MB"
    elif args.what == "grads":                # a backward over the batch, but no weight gradients or optimizer
        formula = weights + budget * layers * (7 * h + 3 * hkv + 4 * inter) * 4 / 2**20 + logits
        goal = "within 20% of the formula"
    else:
        ckpt = "checkpointing" in args.what
        per_token = layers * (h if ckpt else 7 * h + 3 * hkv + 4 * inter)
        extra = (7 * h + 3 * hkv + 4 * inter) if ckpt else 0     # the layer being recomputed
        heads = text.num_attention_heads
        attention = (1 if ckpt else layers) * 2 * heads * attn_cells * 4 / 2**20    # scores and probabilities
        formula = weights + 12 * n_train / 2**20 + budget * (per_token + extra) * 4 / 2**20 + logits + attention
        goal = "within 20% of the formula"
    return {"what": args.what, "model": args.model, "examples": len(prep.encoded), "token_budget": budget,
            "params_M": round(n_params / 1e6, 1), "weights_mb": round(weights), "rss_after_load_mb": round(loaded),
            "peak_rss_mb": round(peak), "formula_mb": round(formula), "peak_over_formula": round(peak / formula, 3),
            "goal": goal, "seconds": round(seconds, 2),
            "step_s_median": round(statistics.median(step_s), 3) if step_s else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=48, help="examples (the longest batches set the peak)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--token-budget", type=int, default=4096, help="the passes' token budget (siftlm's default)")
    ap.add_argument("--steps", type=int, default=4, help="training steps measured")
    ap.add_argument("--only", nargs="*", default=None, help="measure only these (default: every pass and step)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.what = args.child
        print("RESULT " + json.dumps(child(args)))
        return
    rows = []
    for what in args.only or PASSES + TRAIN:
        cmd = [sys.executable, __file__, "--child", what, "--model", args.model, "--n", str(args.n),
               "--max-length", str(args.max_length), "--token-budget", str(args.token_budget), "--steps", str(args.steps)]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(res.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{what} failed")
        rows.append(json.loads(line[len("RESULT "):]))
        print(json.dumps(rows[-1]))
    save_result("bench/out", f"memory-{slug(args.model)}", {"rows": rows})


if __name__ == "__main__":
    main()

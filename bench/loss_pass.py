"""Benchmark: the batched loss engine against a plain per-example Hugging Face loop, side by side.

The loop is what peers do: batch size 1, ``model(input_ids).logits`` over the full sequence and
vocabulary, cross-entropy on the response tokens. The engine runs token-budget batches from length
buckets and applies the output layer only at response positions, in chunks, and also computes entropy,
EL2N and accuracy. Both see the same encoded examples (real alpaca_en_demo records, chat template,
response-only mask); the script checks their losses agree and prints real-token throughput, padding
and the ratio.

    python bench/loss_pass.py --model builtin:smollm2 --n 300
    python bench/loss_pass.py --model builtin:gemma3-270m --n 100
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from _common import save_result, slug
from siftlm.assets import demo_data
from siftlm.config import SignalConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model
from siftlm.models.template import IGNORE
from siftlm.signals.losses import loss_pass, pass_padding
from siftlm.signals.prepare import prepare


@torch.inference_mode()
def naive_loop(model, encoded) -> np.ndarray:
    device = next(model.parameters()).device
    out = []
    for e in encoded:
        ids = torch.tensor([e.input_ids], device=device)
        logits = model(ids).logits[0, :-1].float()                  # (T-1, V): full logits
        labels = torch.tensor(e.labels[1:], device=device)
        out.append(F.cross_entropy(logits, labels, ignore_index=IGNORE).item())
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=300, help="examples")
    ap.add_argument("--token-budget", type=int, default=4096)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()

    lm = load_model(args.model, device=args.device)
    prep = prepare(read_dataset(demo_data("alpaca_en_demo")), lm.tokenizer,
                   SignalConfig(limit=args.n, max_length=args.max_length, progress=False))
    enc = prep.encoded
    real_tokens = sum(len(e.input_ids) for e in enc)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    loss_pass(lm.model, enc[:4], pad_id=lm.tokenizer.pad_token_id, token_budget=args.token_budget)  # warm-up
    naive_loop(lm.model, enc[:2])

    sync()
    t = time.perf_counter()
    ref = naive_loop(lm.model, enc)
    sync()
    t_loop = time.perf_counter() - t

    t = time.perf_counter()
    got = loss_pass(lm.model, enc, pad_id=lm.tokenizer.pad_token_id, token_budget=args.token_budget)
    sync()
    t_engine = time.perf_counter() - t

    res = {
        "model": args.model, "device": str(next(lm.model.parameters()).device),
        "dtype": str(next(lm.model.parameters()).dtype), "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "n_examples": len(enc), "real_tokens": real_tokens,
        "response_tokens": int(sum(e.n_response for e in enc)), "token_budget": args.token_budget,
        "loop_s": round(t_loop, 2), "engine_s": round(t_engine, 2),
        "loop_tok_s": round(real_tokens / t_loop, 1), "engine_tok_s": round(real_tokens / t_engine, 1),
        "ratio": round(t_loop / t_engine, 2), "padding": round(pass_padding(enc, args.token_budget), 4),
        "max_abs_loss_diff": float(np.abs(ref - got["loss"]).max()),
    }
    print(f"{'':22s}{'per-example loop':>18s}{'siftlm engine':>16s}")
    print(f"{'seconds':22s}{t_loop:18.1f}{t_engine:16.1f}")
    print(f"{'real tokens / s':22s}{res['loop_tok_s']:18.1f}{res['engine_tok_s']:16.1f}")
    print(f"{'padding':22s}{0.0:18.3f}{res['padding']:16.3f}")
    print(f"ratio (engine / loop throughput): {res['ratio']:.2f}x   max |loss diff|: {res['max_abs_loss_diff']:.2e}")
    save_result(args.out, f"loss_pass-{slug(args.model)}-{res['device']}", res)


if __name__ == "__main__":
    main()

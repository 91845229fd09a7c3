"""Benchmark: the batched loss engine against a plain per-example Hugging Face loop, side by side.

The loop is what peers do: batch size 1, ``model(input_ids).logits`` over the full sequence and
vocabulary, cross-entropy on the response tokens. The engine runs token-budget batches from length
buckets and applies the output layer only at response positions, in chunks, and also computes entropy,
EL2N and accuracy. Both see the same encoded examples (real alpaca_en_demo records, chat template,
response-only mask); the script checks their losses agree and prints real-token throughput, padding
and the ratio.

    python bench/loss_pass.py --model builtin:smollm2 --n 300
    python bench/loss_pass.py --model builtin:gemma3-270m --n 100

The engine runs in every precision of ``--dtypes`` (fp32 and bf16 by default) and the bf16 per-example losses are
compared with the fp32 ones (median relative difference, max absolute difference, Spearman rank correlation).

Roofline: a bare matrix product at the model's own MLP shape (token budget x hidden @ hidden x intermediate), timed
on the same cores in each precision, against the engine's model FLOPs per second (2 x the decoder's weights per real
token, plus 2 x the output layer per response token, the only positions the engine applies it at; attention's
quadratic part left out): the share of the hardware's matmul speed the pass reaches.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from _common import cpu_record, save_result, slug
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


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, device, seconds: float = 3.0) -> float:
    """GFLOP/s of ``(m, k) @ (k, n)`` in ``dtype``, repeated for about ``seconds`` after a warm-up."""
    a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9


def model_flops(model, real_tokens: int, response_tokens: int) -> float:
    """The engine's model FLOPs: 2 x decoder weights per real token, 2 x output layer per response token."""
    head = model.get_output_embeddings().weight
    skip = {id(head), id(model.get_input_embeddings().weight)}
    body = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    return 2.0 * body * real_tokens + 2.0 * head.numel() * response_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=300, help="examples")
    ap.add_argument("--token-budget", type=int, default=4096)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="engine precisions measured side by side")
    ap.add_argument("--compile", action="store_true",
                    help="also the engine compiled (--compile on) in each precision: its first run (which compiles) and a second")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()

    lm = load_model(args.model, device=args.device, dtype="float32")
    prep = prepare(read_dataset(demo_data("alpaca_en_demo")), lm.tokenizer,
                   SignalConfig(limit=args.n, max_length=args.max_length, progress=False))
    enc = prep.encoded
    real_tokens = sum(len(e.input_ids) for e in enc)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    pad = lm.tokenizer.pad_token_id

    naive_loop(lm.model, enc[:2])                                   # warm-up
    sync()
    t = time.perf_counter()
    ref = naive_loop(lm.model, enc)
    sync()
    t_loop = time.perf_counter() - t

    engine = {}
    for dtype in args.dtypes.split(","):
        handle = lm if dtype == "float32" else load_model(args.model, device=args.device, dtype=dtype)
        with handle.computing():            # products in the handle's precision, as a pass runs them
            loss_pass(handle.model, enc[:4], pad_id=pad, token_budget=args.token_budget)  # warm-up
            sync()
            t = time.perf_counter()
            got = loss_pass(handle.model, enc, pad_id=pad, token_budget=args.token_budget)
            sync()
        engine[dtype] = (time.perf_counter() - t, got["loss"])
        if args.compile:
            from siftlm.models import compiled

            with handle.computing(), compiled.compiling(True):
                for run in ("first", "again"):
                    sync()
                    t = time.perf_counter()
                    got = loss_pass(handle.model, enc, pad_id=pad, token_budget=args.token_budget)
                    sync()
                    failed = compiled._failed.get(handle.model.get_decoder())
                    if failed:
                        print(f"compiled {dtype}: failed ({failed}); eager only")
                        break
                    engine[f"{dtype}_compiled{'_first' if run == 'first' else ''}"] = (time.perf_counter() - t,
                                                                                      got["loss"])

    res = {
        "model": args.model, "device": str(next(lm.model.parameters()).device),
        **cpu_record(),
        "threads": torch.get_num_threads(), "n_examples": len(enc), "real_tokens": real_tokens,
        "response_tokens": int(sum(e.n_response for e in enc)), "token_budget": args.token_budget,
        "loop_s": round(t_loop, 2), "loop_tok_s": round(real_tokens / t_loop, 1),
        "padding": round(pass_padding(enc, args.token_budget), 4),
    }
    print(f"{'':24s}{'seconds':>10s}{'real tok/s':>12s}{'vs loop':>9s}")
    print(f"{'per-example loop (fp32)':24s}{t_loop:10.1f}{res['loop_tok_s']:12.1f}{1:9.2f}")
    for dtype, (secs, loss) in engine.items():
        res[f"engine_{dtype}_s"] = round(secs, 2)
        res[f"engine_{dtype}_tok_s"] = round(real_tokens / secs, 1)
        res[f"ratio_{dtype}"] = round(t_loop / secs, 2)
        res[f"max_abs_loss_diff_{dtype}"] = float(np.abs(ref - loss).max())
        print(f"{'siftlm engine ' + dtype:24s}{secs:10.1f}{real_tokens / secs:12.1f}{t_loop / secs:9.2f}")
    if "float32" in engine and "bfloat16" in engine:
        (s32, l32), (s16, l16) = engine["float32"], engine["bfloat16"]
        res["bf16_speedup"] = round(s32 / s16, 2)
        res["bf16_median_rel_diff"] = float(np.median(np.abs(l16 - l32) / np.abs(l32)))
        res["bf16_max_abs_diff"] = float(np.abs(l16 - l32).max())
        res["bf16_spearman"] = float(stats.spearmanr(l32, l16).statistic)
        print(f"bf16 vs fp32: {res['bf16_speedup']:.2f}x faster; per-example loss median rel diff "
              f"{res['bf16_median_rel_diff']:.2e}, max abs {res['bf16_max_abs_diff']:.3f}, Spearman {res['bf16_spearman']:.4f}")
    print(f"padding {res['padding']:.3f}; max |loss diff| vs the loop (fp32): {res.get('max_abs_loss_diff_float32', 0):.2e}")
    c = lm.model.config
    flops = model_flops(lm.model, real_tokens, res["response_tokens"])
    peaks = {}
    for dtype, (secs, _) in engine.items():
        if dtype.endswith("_first"):
            continue
        plain = dtype.split("_")[0]                  # a compiled row shares its precision's matmul figure
        if plain not in peaks:
            peaks[plain] = matmul_gflops(args.token_budget, c.hidden_size, c.intermediate_size, getattr(torch, plain),
                                         next(lm.model.parameters()).device)
        peak = peaks[plain]
        res[f"matmul_{dtype}_gflop_s"] = round(peak, 1)
        res[f"engine_{dtype}_gflop_s"] = round(flops / secs / 1e9, 1)
        res[f"roofline_share_{dtype}"] = round(flops / secs / 1e9 / peak, 3)
        print(f"{dtype}: engine {flops / secs / 1e9:.1f} GFLOP/s of model FLOPs, matmul at the model's shape "
              f"({args.token_budget}x{c.hidden_size} @ {c.hidden_size}x{c.intermediate_size}) {peak:.1f} GFLOP/s: "
              f"{100 * flops / secs / 1e9 / peak:.0f} % of the roofline")
    save_result(args.out, f"loss_pass-{slug(args.model)}-{res['device']}", res)


if __name__ == "__main__":
    main()

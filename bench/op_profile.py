"""Profile: where the loss pass's and a LoRA training epoch's time goes, by kind of operator.

Runs siftlm's own code (``signals.losses.loss_pass`` over token-budget batches; ``train.loop.train`` for one LoRA
epoch) under ``torch.profiler`` on real alpaca_en_demo examples and groups every operator's *self* time (time in the
operator itself, not in operators it calls, so nothing is counted twice) into matrix products, attention,
element-wise work, the output layer's softmax statistics, the optimizer, copies and the rest. It also times the same
work without the profiler, and prints what matrix products alone would allow: the wall time if everything that is
not a matrix product took no time, i.e. the ceiling that fusing or removing the element-wise work could reach.

    python bench/op_profile.py --n 48                       # the loss pass and a training epoch, fp32
    python bench/op_profile.py --n 48 --what loss --dtype bfloat16
    python bench/op_profile.py --n 8 --what train --shapes   # the element-wise calls by input shape

The profiler adds a small cost per operator call, so shares of many small element-wise calls are slightly high;
the unprofiled wall time is printed beside the profiled one so the overhead is visible.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from _common import cpu_record, save_result, slug
from loss_pass import matmul_gflops
from siftlm.assets import demo_data
from siftlm.config import SignalConfig, TrainConfig
from siftlm.data import read_dataset
from siftlm.keyed import open_keyed
from siftlm.models.load import load_model
from siftlm.signals.losses import loss_pass
from siftlm.signals.prepare import prepare
from siftlm.train.loop import train

# operator name -> kind; names not listed fall into "other". Self time only, so a wrapper (aten::linear,
# aten::matmul, autograd's *Backward0 nodes) adds only its own bookkeeping, never its children's time.
KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul",
                        "aten::mkldnn_", "aten::_mkl"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product"),
    "softmax statistics": ("aten::log_softmax", "aten::_log_softmax", "aten::logsumexp", "aten::softmax",
                           "aten::_softmax", "aten::exp", "aten::nll_loss", "aten::cross_entropy", "aten::max",
                           "aten::amax", "aten::gather"),
    "element-wise": ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::silu", "aten::pow", "aten::rsqrt",
                     "aten::mean", "aten::neg", "aten::where", "aten::masked_fill", "aten::sigmoid", "aten::cos",
                     "aten::sin", "aten::tanh", "aten::clamp", "aten::fill_", "aten::zero_", "aten::eq", "aten::ne",
                     "aten::lt", "aten::gt", "aten::le", "aten::ge", "aten::ones", "aten::zeros", "aten::arange",
                     "aten::embedding", "aten::index", "aten::threshold", "aten::sum"),
    "copies and layout": ("aten::copy_", "aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone", "aten::cat",
                          "aten::stack", "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::transpose",
                          "aten::view", "aten::reshape", "aten::permute", "aten::expand", "aten::slice",
                          "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::t", "aten::as_strided",
                          "aten::_unsafe_view", "aten::split", "aten::narrow", "aten::pad", "aten::constant_pad_nd",
                          "aten::index_select", "aten::nonzero", "aten::item", "aten::_local_scalar_dense"),
    "optimizer": ("aten::_foreach", "aten::addcdiv", "aten::addcmul", "aten::lerp", "aten::sqrt", "Optimizer."),
}


def kind_of(name: str) -> str:
    """The kind of an operator by its profiler name (``KINDS``; the first matching prefix wins)."""
    for kind, prefixes in KINDS.items():       # "aten::mul" also names "aten::mul_"; "aten::add" not "aten::addmm"
        if any(name == p or name.startswith((p + "_", p + ".")) or (p.endswith(("_", ".")) and name.startswith(p))
               for p in prefixes):
            return kind
    return "other"


def by_kind(events) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Self CPU seconds per kind and per operator (largest first) from ``profile.key_averages()``."""
    kinds, ops = defaultdict(float), []
    for e in events:
        secs = e.self_cpu_time_total / 1e6
        if secs <= 0:
            continue
        kinds[kind_of(e.key)] += secs
        ops.append((e.key, secs))
    return dict(kinds), sorted(ops, key=lambda kv: -kv[1])


def by_shape(prof, names=("aten::mul", "aten::add", "aten::fill_"), top: int = 12) -> list[list]:
    """The largest element-wise calls by input shapes: [operator, share of self time, calls, input shapes]. LoRA's
    scaling shows as a tensor times a scalar at each adapted layer's output width."""
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = sorted((e for e in events if e.key in names), key=lambda e: -e.self_cpu_time_total)[:top]
    return [[e.key, round(e.self_cpu_time_total / total, 4), e.count, str(e.input_shapes)] for e in rows]


def measured(work, label: str, peak_gflop_s: float, shapes: bool = False) -> dict:
    """``work(0)`` once to warm up (the first run of a batch shape also builds its kernels), ``work(1)`` timed without
    the profiler, then ``work(2)`` under it; the self time grouped by kind, and the speed the matrix products ran at
    (the profiler's FLOP count of aten::mm/addmm over their self time) against ``peak_gflop_s``, a bare matmul's at
    the model's MLP shape."""
    work(0)
    t = time.perf_counter()
    work(1)
    plain = time.perf_counter() - t
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=shapes) as prof:
        t = time.perf_counter()
        work(2)
        profiled = time.perf_counter() - t
    events = prof.key_averages()
    kinds, ops = by_kind(events)
    total = sum(kinds.values())
    mm_flops = sum(e.flops for e in events if kind_of(e.key) == "matrix products" and e.flops)
    mm_secs = sum(e.self_cpu_time_total for e in events if kind_of(e.key) == "matrix products" and e.flops) / 1e6
    mm_rate = mm_flops / mm_secs / 1e9 if mm_secs else None
    shares = {k: round(v / total, 4) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}
    mm = kinds.get("matrix products", 0.0) / total
    print(f"\n{label}: {plain:.1f} s unprofiled, {profiled:.1f} s profiled ({total:.1f} s of operator self time)")
    for k, s in shares.items():
        print(f"  {k:22s}{100 * s:6.1f} %")
    print("  largest operators: " + ", ".join(f"{n} {100 * s / total:.1f} %" for n, s in ops[:10]))
    print(f"  matrix products alone would take {mm * plain:.1f} s of the {plain:.1f} s: everything else removed, "
          f"{1 / mm:.2f}x faster at most" if mm else "  no matrix products recorded")
    if mm_rate:
        print(f"  the matrix products ran at {mm_rate:.1f} GFLOP/s, {100 * mm_rate / peak_gflop_s:.0f} % of a bare "
              f"matmul at the model's MLP shape ({peak_gflop_s:.1f} GFLOP/s)")
    extra = {}
    if shapes:
        extra["elementwise_by_shape"] = by_shape(prof)
        for op, share, calls, dims in extra["elementwise_by_shape"]:
            print(f"  {op:12s}{100 * share:6.2f} %  {calls:6d} calls  {dims}")
    return {**extra, "matmul_gflop_s": round(mm_rate, 1) if mm_rate else None, "bare_matmul_gflop_s": round(peak_gflop_s, 1),
            "unprofiled_s": round(plain, 2), "profiled_s": round(profiled, 2), "self_s": round(total, 2),
            "shares": shares, "top_ops": [[n, round(s / total, 4)] for n, s in ops[:20]],
            "matmul_only_ceiling": round(1 / mm, 3) if mm else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=48, help="examples")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--what", default="loss,train", help="loss (the base loss pass), train (one LoRA epoch)")
    ap.add_argument("--token-budget", type=int, default=4096, help="the loss pass's batches")
    ap.add_argument("--train-budget", type=int, default=1024, help="the training epoch's batches")
    ap.add_argument("--shapes", action="store_true", help="also the largest element-wise calls by input shape")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()

    lm = load_model(args.model, device="cpu", dtype=args.dtype)
    enc = prepare(read_dataset(demo_data("alpaca_en_demo")), lm.tokenizer,
                  SignalConfig(limit=args.n, max_length=512, progress=False)).encoded
    pad = lm.tokenizer.pad_token_id
    res = {"model": args.model, "dtype": args.dtype, **cpu_record(), "threads": torch.get_num_threads(),
           "n_examples": len(enc), "real_tokens": sum(len(e.input_ids) for e in enc)}
    c = lm.model.config
    peak = matmul_gflops(args.token_budget, c.hidden_size, c.intermediate_size, getattr(torch, args.dtype), "cpu")
    res["bare_matmul_gflop_s"] = round(peak, 1)
    what = args.what.split(",")
    if "loss" in what:
        def loss_work(_):
            with lm.computing():
                loss_pass(lm.model, enc, pad_id=pad, token_budget=args.token_budget)
        res["loss_pass"] = measured(loss_work, f"loss pass, {len(enc)} examples, budget {args.token_budget}", peak,
                                     args.shapes)
    if "train" in what:
        handles = [load_model(args.model, device="cpu", dtype=args.dtype) for _ in range(3)]    # LoRA goes on in place

        def train_work(run):
            torch.manual_seed(0)
            with tempfile.TemporaryDirectory() as tmp:
                train(handles[run], enc, open_keyed(tmp, {"profile": args.dtype}, what="a profile"),
                      TrainConfig(epochs=1, lr=1e-3, token_budget=args.train_budget), pad_id=pad)
        res["train_epoch"] = measured(train_work, f"one LoRA epoch, {len(enc)} examples, budget {args.train_budget}",
                                      peak, args.shapes)
    save_result(args.out, f"profile-{slug(args.model)}-{args.dtype}", res)


if __name__ == "__main__":
    main()

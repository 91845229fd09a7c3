"""GPU check: siftlm's batched paths against the per-example loop on one CUDA GPU, in one run of under 8 minutes.

    bench/gpu.sh               # or: python bench/gpu.py
    bench/gpu.sh --dry-run     # what it would run; exits 0 (and says so) on a machine without a GPU

Phases (each on the built-in SmolLM2-135M unless ``--model``; real alpaca_en_demo / AlpacaEval records):

1. loss: the per-example loop (batch size 1, full logits, ``bench/loss_pass.py``'s ``naive_loop``) against the loss
   engine, in fp32 and bf16, and the engine compiled (``--compile on``; its first run includes the compilation);
2. lora-eval: the loss pass of a LoRA model through unmerged adapters against merged ones (``siftlm.models.merge``,
   what every pass now does) and against the base model;
3. train: one LoRA epoch, the per-example loop (``bench/train_step.py``'s ``naive_epoch``) against siftlm's loop;
4. grads: the grads pass one example at a time against token-budget batches (``bench/grads.py``'s (b) and (a));
5. generate: greedy answers, one ``generate`` per prompt against token-budget batches (``bench/generate.py``);
6. ddp: when 2 GPUs exist, ``tests/train/test_distributed.py -k nccl``: two processes under NCCL train what one does.

Each row prints seconds, real tokens per second, the ratio to the loop, MFU and the peak GPU memory of that row.
MFU: model FLOPs per second over the GPU's dense bf16 peak, looked up from the device name (H100 SXM 989, H100 NVL
835, H100 PCIe 756, H200 989, A100 312, L4 121 TFLOP/s; anything else: unknown). Model FLOPs per token as
``siftlm plan`` counts them (Kaplan et al.'s rule, P the model's parameters): 2P for a forward (loss, generation),
4P for a LoRA training step or the grads pass (forward, and a backward through the activations: frozen weights
get no gradients). They are the model's FLOPs, not the kernels': the engine applies the output layer only where a
response token is predicted, and the loop computes full logits, but both are charged the same 2P per token.
fp32 rows run at most TF32-free fp32 speed, so their MFU against the bf16 peak is low by construction.

The results go to ``--out`` (bench/out/gpu-<model>-<gpu>.json). A phase that fails prints one line and the run goes
on; phases not started within ``--budget-s`` seconds are skipped (said so), so the whole stays under 8 minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BF16_PEAK_TFLOPS = [               # dense bf16, no sparsity; the first pattern that matches the device name wins
    (r"H200", 989.0), (r"H100.*NVL", 835.0), (r"H100.*PCIe", 756.0), (r"H100", 989.0), (r"A100", 312.0),
    (r"\bL4\b", 121.0),
]
PHASES = {
    "loss": "loss pass: per-example loop (batch 1, full logits) vs the engine, fp32 and bf16, and the engine compiled",
    "lora-eval": "a LoRA model's loss pass: unmerged adapters vs merged (siftlm.models.merge) vs the base model",
    "train": "one LoRA epoch: per-example loop (HF loss) vs siftlm's loop, fp32 and bf16",
    "grads": "grads pass: one example at a time vs token-budget batches",
    "generate": "greedy generation: one generate() per prompt vs token-budget batches",
    "ddp": "2-process DDP under NCCL trains what one process does (pytest tests/train/test_distributed.py -k nccl); "
           "needs 2 GPUs",
}


def bf16_peak(name: str) -> float | None:
    """The dense bf16 peak (TFLOP/s) of a GPU from its name, or None when it is not in the table."""
    return next((tf for pattern, tf in BF16_PEAK_TFLOPS if re.search(pattern, name)), None)


class Bench:
    def __init__(self, args):
        self.args = args
        self.start = time.perf_counter()
        self.cuda = not args.cpu_smoke
        self.device = "cuda:0" if self.cuda else "cpu"
        self.name = torch.cuda.get_device_name(0) if self.cuda else "cpu (smoke run)"
        self.peak = bf16_peak(self.name)
        self.rows: list[dict] = []
        self.notes: dict = {}

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def timed(self, fn, *args, **kwargs):
        """(fn(*args, **kwargs), seconds, peak GPU memory in MiB) with the GPU synchronised around it."""
        if not self.cuda:                  # --cpu-smoke: the code paths, no measurement
            t = time.perf_counter()
            return fn(*args, **kwargs), time.perf_counter() - t, 0.0
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return out, time.perf_counter() - t, torch.cuda.max_memory_allocated() / 2**20

    def free(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()

    def row(self, phase: str, what: str, secs: float, tokens: int, flops: float, mib: float, loop_s: float | None,
            **extra) -> dict:
        mfu = flops / secs / (self.peak * 1e12) if self.peak else None
        r = {"phase": phase, "what": what, "s": round(secs, 3), "tokens": tokens, "tok_s": round(tokens / secs, 1),
             "vs_loop": round(loop_s / secs, 2) if loop_s else None, "mfu": None if mfu is None else round(mfu, 4),
             "peak_mib": round(mib), **extra}
        self.rows.append(r)
        mfu_text = "unknown" if mfu is None else f"{mfu:.1%}"
        ratio = f"{r['vs_loop']:.2f}x" if r["vs_loop"] else "-"
        print(f"{phase:10s} {what:50s} {secs:8.2f} {r['tok_s']:11,.0f} {ratio:>8s} {mfu_text:>8s} {mib:9,.0f}",
              flush=True)
        return r


def _params(model) -> int:
    """Parameters of the base model (a LoRA wrapper's adapters excluded; tied weights once)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)


def _data(tokenizer, n: int):
    from siftlm.assets import demo_data
    from siftlm.config import SignalConfig
    from siftlm.data import read_dataset
    from siftlm.signals.prepare import prepare

    return prepare(read_dataset(demo_data("alpaca_en_demo")), tokenizer,
                   SignalConfig(limit=n, max_length=512, progress=False)).encoded


def _load(b: Bench, dtype: str):
    from siftlm.models.load import load_model

    return load_model(b.args.model, device=b.device, dtype=dtype, quiet=True)


def phase_loss(b: Bench) -> None:
    import numpy as np
    from scipy import stats

    from loss_pass import naive_loop
    from siftlm.models import compiled
    from siftlm.models.compiled import compiling
    from siftlm.signals.losses import loss_pass

    a = b.args
    losses = {}
    for dtype in ("float32", "bfloat16"):
        lm = _load(b, dtype)
        with lm.computing():           # products in the handle's precision
            enc = _data(lm.tokenizer, a.n_loss)
            tokens, flops = sum(len(e.input_ids) for e in enc), 2 * _params(lm.model) * sum(len(e.input_ids) for e in enc)
            pad = lm.tokenizer.pad_token_id
            naive_loop(lm.model, enc[:2])
            loop, t_loop, mib = b.timed(naive_loop, lm.model, enc)
            b.row("loss", f"per-example loop {dtype}", t_loop, tokens, flops, mib, None)
            loss_pass(lm.model, enc[:8], pad_id=pad, token_budget=a.token_budget)
            got, secs, mib = b.timed(loss_pass, lm.model, enc, pad_id=pad, token_budget=a.token_budget)
            b.row("loss", f"engine {dtype}", secs, tokens, flops, mib, t_loop,
                  max_abs_diff_vs_loop=float(np.abs(got["loss"] - loop).max()))
            losses[dtype] = got["loss"]
            if dtype == "bfloat16" and not a.no_compile and b.left() > 120:
                with compiling(True):
                    first, t_first, mib = b.timed(loss_pass, lm.model, enc, pad_id=pad, token_budget=a.token_budget)
                    failed = compiled._failed.get(lm.model.get_decoder())
                    if failed:
                        b.notes["compile"] = f"failed: {failed}"
                        print(f"loss       compiled: failed ({failed}), eager rows only")
                    else:
                        b.row("loss", "engine bfloat16 compiled, first run (compiles)", t_first, tokens, flops, mib, t_loop)
                        again, secs, mib = b.timed(loss_pass, lm.model, enc, pad_id=pad, token_budget=a.token_budget)
                        b.row("loss", "engine bfloat16 compiled", secs, tokens, flops, mib, t_loop,
                              compile_s=round(t_first - secs, 1),
                              max_abs_diff_vs_eager=float(np.abs(again["loss"] - got["loss"]).max()),
                              spearman_vs_eager=float(stats.spearmanr(again["loss"], got["loss"]).statistic))
        lm = None
        b.free()
    b.notes["loss_bf16_spearman_vs_fp32"] = float(stats.spearmanr(losses["float32"], losses["bfloat16"]).statistic)
    print(f"loss       bf16 vs fp32 per-example losses: Spearman {b.notes['loss_bf16_spearman_vs_fp32']:.4f}")


def phase_lora_eval(b: Bench) -> None:
    import contextlib

    import numpy as np
    from peft import LoraConfig, get_peft_model

    from siftlm.models.merge import merged
    from siftlm.signals.losses import loss_pass

    a = b.args
    lm = _load(b, "auto")
    enc = _data(lm.tokenizer, a.n_loss)
    tokens = sum(len(e.input_ids) for e in enc)
    flops, pad = 2 * _params(lm.model) * tokens, lm.tokenizer.pad_token_id

    def run(m):
        with lm.computing():              # products in the handle's precision
            return loss_pass(m, enc, pad_id=pad, token_budget=a.token_budget)
    run(lm.model)
    _, t_base, mib = b.timed(run, lm.model)
    b.row("lora-eval", "base model", t_base, tokens, flops, mib, None)
    torch.manual_seed(0)
    lora = get_peft_model(lm.model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():                  # a trained-looking adapter (B = 0 at initialisation)
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    lora.eval()
    out = {}
    for what, ctx in (("LoRA unmerged", contextlib.nullcontext), ("LoRA merged", lambda: merged(lora))):
        with ctx():
            run(lora)
            out[what], secs, mib = b.timed(run, lora)
        b.row("lora-eval", f"{what} (ratio: to the base model)", secs, tokens, flops, mib, t_base)
    b.notes["lora_merged_max_abs_diff"] = float(np.abs(out["LoRA merged"]["loss"] - out["LoRA unmerged"]["loss"]).max())
    print(f"lora-eval  merged vs unmerged per-example losses: max |diff| {b.notes['lora_merged_max_abs_diff']:.2e} "
          f"({lm.precision.name})")


def phase_train(b: Bench) -> None:
    from siftlm.config import TrainConfig
    from siftlm.keyed import open_keyed
    from siftlm.models.batching import plan_batches
    from siftlm.train.loop import train
    from train_step import naive_epoch

    a = b.args
    for dtype in ("float32", "bfloat16"):
        lm = _load(b, dtype)
        enc = _data(lm.tokenizer, a.n_train)
        tokens = sum(len(e.input_ids) for e in enc)
        flops = 4 * _params(lm.model) * tokens
        per_step = max(1, round(len(enc) / len(plan_batches([len(e.input_ids) for e in enc], a.train_budget))))
        torch.manual_seed(0)
        _, t_loop, mib = b.timed(naive_epoch, lm.model, enc, per_step, 1e-3)
        b.row("train", f"per-example loop {dtype}", t_loop, tokens, flops, mib, None)
        lm = None
        lm = _load(b, dtype)
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            keyed = open_keyed(tmp, {"bench": dtype}, what="a benchmark")
            cfg = TrainConfig(epochs=1, lr=1e-3, token_budget=a.train_budget)
            _, secs, mib = b.timed(train, lm, enc, keyed, cfg, pad_id=lm.tokenizer.pad_token_id)
        b.row("train", f"siftlm loop {dtype}", secs, tokens, flops, mib, t_loop)
        lm = None
        b.free()


def phase_grads(b: Bench) -> None:
    from siftlm.config import GradConfig
    from siftlm.signals.grads import LoraGradProbe, grad_pass

    a = b.args
    lm = _load(b, "auto")
    enc = _data(lm.tokenizer, a.n_grads)
    tokens, pad = sum(len(e.input_ids) for e in enc), lm.tokenizer.pad_token_id
    flops = 4 * _params(lm.model) * tokens
    cfg = GradConfig(dim=8192)
    probe = LoraGradProbe(lm.model, cfg)

    def grads(part, **kw):
        with lm.computing():              # products in the handle's precision
            return grad_pass(lm.model, part, pad_id=pad, cfg=cfg, probe=probe, **kw)
    grads(enc[:4], token_budget=a.token_budget)
    _, t_loop, mib = b.timed(lambda: [grads([e]) for e in enc])
    b.row("grads", f"one example at a time ({lm.precision.name})", t_loop, tokens, flops, mib, None)
    _, secs, mib = b.timed(grads, enc, token_budget=a.token_budget)
    b.row("grads", f"token-budget batches ({lm.precision.name})", secs, tokens, flops, mib, t_loop)


def phase_generate(b: Bench) -> None:
    from siftlm.evaluate.generate import generate, generate_batch
    from siftlm.evaluate.sets import load_eval_set
    from siftlm.models.template import prompt_ids

    a = b.args
    lm = _load(b, "auto")
    items = load_eval_set("builtin:alpaca-eval")[: a.n_generate]
    prompts = [prompt_ids(lm.tokenizer, [{"role": "user", "content": i.turns[0]}]) for i in items]
    new = a.max_new_tokens

    def one(p, n):
        with lm.computing():              # products in the handle's precision, as generate() runs them
            return generate_batch(lm.model, lm.tokenizer, [p], max_new_tokens=n)[0]
    one(prompts[0], 4)
    loop, t_loop, mib = b.timed(lambda: [one(p, new) for p in prompts])
    n_new = sum(len(lm.tokenizer(x, add_special_tokens=False).input_ids) for x in loop)
    flops = 2 * _params(lm.model) * (n_new + sum(len(p) for p in prompts))
    b.row("generate", f"one prompt at a time ({lm.precision.name}, new tokens)", t_loop, n_new, flops, mib, None)
    batched, secs, mib = b.timed(lambda: [x[0] for x in generate(lm, items, max_new_tokens=new,
                                                                  token_budget=a.generate_budget)])
    b.row("generate", f"token-budget batches ({lm.precision.name}, new tokens)", secs, n_new, flops, mib, t_loop,
          identical_answers=sum(x == y for x, y in zip(loop, batched, strict=True)))


def phase_ddp(b: Bench) -> None:
    if not b.cuda or torch.cuda.device_count() < 2:
        print(f"ddp        skipped: {torch.cuda.device_count()} GPU here, the NCCL test needs 2")
        b.notes["ddp"] = "skipped: fewer than 2 GPUs"
        return
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/train/test_distributed.py",
           "-k", "nccl"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(60, int(b.left())))
        lines = (res.stdout + res.stderr).strip().splitlines()
        diffs = [ln.strip() for ln in lines if "NCCL vs one process" in ln]
        b.notes["ddp"] = f"rc {res.returncode}: {(lines or [''])[-1]}" + (f"; {diffs[0]}" if diffs else "")
    except subprocess.TimeoutExpired:
        b.notes["ddp"] = "timed out"
    print(f"ddp        NCCL equality test: {b.notes['ddp']}")


RUN = {"loss": phase_loss, "lora-eval": phase_lora_eval, "train": phase_train, "grads": phase_grads,
       "generate": phase_generate, "ddp": phase_ddp}


def dry_run(args, phases: list[str]) -> int:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpus:
        print(f"bench/gpu.sh: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): nothing "
              "would be measured on this machine.")
    else:
        name = torch.cuda.get_device_name(0)
        peak = bf16_peak(name)
        print(f"bench/gpu.sh: {gpus} x {name}, bf16 peak {f'{peak:g} TFLOP/s' if peak else 'unknown (MFU not shown)'}")
    print(f"On a CUDA GPU it runs, within {args.budget_s:.0f} s, on {args.model} (loss/lora-eval n={args.n_loss}, "
          f"train n={args.n_train}, grads n={args.n_grads}, generate n={args.n_generate} x {args.max_new_tokens} new "
          "tokens):")
    for k, name in enumerate(phases, 1):
        extra = "" if name != "ddp" else f" [this machine: {gpus} GPU{'s' if gpus != 1 else ''}]"
        print(f"  {k}. {name:10s} {PHASES[name]}{extra}")
    print(f"printing seconds, tok/s, ratio to the loop, MFU against the bf16 peak and peak GPU memory per row; "
          f"results to {args.out}/gpu-<model>-<gpu>.json")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="say what would run, measure nothing (exit 0 without a GPU)")
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--only", default=",".join(PHASES), help=f"phases to run, of {', '.join(PHASES)}")
    ap.add_argument("--n-loss", type=int, default=400)
    ap.add_argument("--n-train", type=int, default=128)
    ap.add_argument("--n-grads", type=int, default=128)
    ap.add_argument("--n-generate", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--token-budget", type=int, default=16384, help="padded tokens per batch of the passes")
    ap.add_argument("--train-budget", type=int, default=2048, help="padded tokens per optimizer step (siftlm's default)")
    ap.add_argument("--generate-budget", type=int, default=16384)
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled loss-pass rows")
    ap.add_argument("--budget-s", type=float, default=420, help="start no phase after this many seconds")
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)    # every phase on the CPU: a test
    args = ap.parse_args()
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        ap.error(f"unknown phase {unknown[0]!r}; known: {', '.join(PHASES)}")
    if args.dry_run:
        return dry_run(args, phases)
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("bench/gpu.sh: no CUDA GPU here (torch.cuda.is_available() is False); nothing measured. "
              "bench/gpu.sh --dry-run shows what would run.", file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    from _common import save_result, slug

    hf_logging.disable_progress_bar()
    b = Bench(args)
    print(f"{b.name} (bf16 peak {f'{b.peak:g} TFLOP/s' if b.peak else 'unknown: MFU not shown'}), torch "
          f"{torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)")
    print(f"{'phase':10s} {'':50s} {'seconds':>8s} {'tok/s':>11s} {'vs loop':>8s} {'MFU':>8s} {'peak MiB':>9s}")
    failed = []
    for name in phases:
        if b.left() <= 0:
            print(f"{name:10s} skipped: the {args.budget_s:.0f} s budget is spent")
            b.notes[name] = "skipped (time budget)"
            continue
        try:
            RUN[name](b)
        except Exception as e:             # noqa: BLE001  (one line, then the other phases)
            first = next((ln for ln in str(e).splitlines() if ln.strip()), "")
            print(f"{name:10s} FAILED: {type(e).__name__}: {first[:200]}")
            b.notes[name] = f"failed: {type(e).__name__}: {first[:200]}"
            failed.append(name)
        b.free()
    total = time.perf_counter() - b.start
    print(f"total {total:.0f} s")
    save_result(args.out, f"gpu-{slug(args.model)}-{slug(b.name.replace(' ', '_'))}",
                {"model": args.model, "gpu": b.name, "gpus": torch.cuda.device_count(), "bf16_peak_tflops": b.peak,
                 "torch": torch.__version__, "cuda": torch.version.cuda, "total_s": round(total, 1),
                 "args": vars(args), "rows": b.rows, "notes": b.notes})
    if any(name == "ddp" and not str(b.notes.get("ddp", "")).startswith(("rc 0", "skipped")) for name in phases):
        failed.append("ddp")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

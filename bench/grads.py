"""Benchmark: per-example LoRA-gradient features, batched with the sparse JL, against batch-size-1 loops.

(a) siftlm: token-budget batches, ONE forward + backward per batch; per-example grad_B from each layer's
    input activations and output gradients (no weight gradients), sparse JL applied layer by layer.
(b) the same probe and sparse JL, one example at a time (what batching alone buys).
(c) what LESS / TRAK do: one example at a time, autograd on explicit LoRA B parameters, the concatenated
    gradient projected by a dense Gaussian matrix (N(0, 1/D), held in memory, 16 gradients per matmul as
    LESS's projection interval). Building that matrix is timed apart and not charged to (c).

Agreement: cosine of (a) and (b) per example, and for (a) and (c) the error of their pairwise cosine
similarities against the exact ones of the unprojected gradients (both are JL estimates of the same
quantity with different random maps; sqrt(2/D) is the expected scale).

(d) fused: the grads pass's forward also giving the base loss pass's columns and the lm-embed vectors
    (``run_pass("grads", also=("loss", "lm-embed"))``, what an experiment pool's scoring runs) against the three
    passes one after another; with the largest difference between their values.

    python bench/grads.py --model builtin:smollm2 --n 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import cpu_record, save_result, slug
from siftlm.assets import demo_data
from siftlm.config import GradConfig, SignalConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model
from siftlm.progress import peak_rss_gb
from siftlm.signals.embed import lm_embed_pass
from siftlm.signals.grads import LoraGradProbe, grad_pass, grads_and, reference_lora_grads
from siftlm.signals.losses import loss_pass
from siftlm.signals.prepare import prepare


def dense_gaussian(p: int, d: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    m = torch.empty(p, d, device=device)
    for start in range(0, p, 1 << 16):                     # in blocks, so peak memory is the matrix itself
        stop = min(p, start + (1 << 16))
        m[start:stop] = torch.randn(stop - start, d, generator=g, device=device) / d ** 0.5
    return m


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fused_row(model, enc, pad, cfg, probe, token_budget, a, t_a, sync) -> dict:
    """(d): the loss and lm-embed passes after the grads pass (``t_a`` seconds, rows ``a``), against one forward."""
    t = time.perf_counter()
    loss_alone = loss_pass(model, enc, pad_id=pad, token_budget=token_budget)
    embed_alone = np.stack(lm_embed_pass(model, enc, pad_id=pad, token_budget=token_budget)["vector"])
    sync()
    t_three = t_a + time.perf_counter() - t
    t = time.perf_counter()
    d = grads_and(model, enc, pad_id=pad, also=("loss", "lm-embed"), cfg=cfg, probe=probe, token_budget=token_budget)
    sync()
    t_d = time.perf_counter() - t
    res = {"fused_three_passes_s": round(t_three, 2), "fused_one_forward_s": round(t_d, 2),
           "fused_ratio": round(t_three / t_d, 2),
           "fused_loss_max_abs_diff": float(np.abs(d["loss"]["loss"] - loss_alone["loss"]).max()),
           "fused_vector_max_abs_diff": float(np.abs(np.stack(d["lm-embed"]["vector"]) - embed_alone).max()),
           "fused_grads_max_abs_diff": float(np.abs(np.stack(d["grads"]["vector"]) - np.stack(a["vector"])).max())}
    print(f"(d) grads + loss + lm-embed: three passes {t_three:.1f} s, one forward {t_d:.1f} s: "
          f"{res['fused_ratio']:.2f}x (max |diff| loss {res['fused_loss_max_abs_diff']:.1e}, lm-embed "
          f"{res['fused_vector_max_abs_diff']:.1e}, grads {res['fused_grads_max_abs_diff']:.1e})")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--density", type=int, default=4)
    ap.add_argument("--target-modules", default="all-linear")
    ap.add_argument("--token-budget", type=int, default=4096)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--interval", type=int, default=16, help="(c): gradients per dense projection matmul")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--fused-only", action="store_true", help="(a) and (d) only, without the batch-size-1 loops")
    args = ap.parse_args()

    lm = load_model(args.model, device=args.device)
    lm.computing().__enter__()              # the whole benchmark runs in the handle's precision, as a pass does
    model, pad = lm.model, lm.tokenizer.pad_token_id
    device = next(model.parameters()).device
    enc = prepare(read_dataset(demo_data("alpaca_en_demo")), lm.tokenizer,
                  SignalConfig(limit=args.n, max_length=args.max_length, progress=False)).encoded
    cfg = GradConfig(rank=args.rank, dim=args.dim, density=args.density, target_modules=args.target_modules,
                     normalize=False)
    probe = LoraGradProbe(model, cfg)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tokens = sum(len(e.input_ids) for e in enc)
    grad_pass(model, enc[:4], pad_id=pad, cfg=cfg, probe=probe, token_budget=args.token_budget)   # warm-up

    sync()
    t = time.perf_counter()
    a = grad_pass(model, enc, pad_id=pad, cfg=cfg, probe=probe, token_budget=args.token_budget)
    sync()
    t_a = time.perf_counter() - t
    meta = {"model": args.model, "device": str(device), "dtype": str(next(model.parameters()).dtype),
            **cpu_record(), "threads": torch.get_num_threads(),
            "n_examples": len(enc), "real_tokens": tokens, "token_budget": args.token_budget}
    if args.fused_only:
        res = {**meta, "a_s": round(t_a, 2), **fused_row(model, enc, pad, cfg, probe, args.token_budget, a, t_a, sync),
               "peak_rss_gb": round(peak_rss_gb(), 2)}
        save_result(args.out, f"grads-fused-{slug(args.model)}-{res['device']}", res)
        return

    t = time.perf_counter()
    b = [grad_pass(model, [e], pad_id=pad, cfg=cfg, probe=probe)["vector"][0] for e in enc]
    sync()
    t_b = time.perf_counter() - t

    t = time.perf_counter()
    proj = dense_gaussian(probe.n_params, args.dim, 0, device)
    sync()
    t_matrix = time.perf_counter() - t
    names = [n for n, _ in probe.layers]
    raw_all: list[torch.Tensor] = []
    c, pending = [], []
    t_proj = 0.0

    def project(batch, proj=proj):
        nonlocal t_proj
        sync()
        t0 = time.perf_counter()
        c.append(torch.stack(batch) @ proj)
        sync()
        t_proj += time.perf_counter() - t0

    sync()
    t = time.perf_counter()
    for e in enc:
        g = reference_lora_grads(model, e, pad_id=pad, cfg=cfg)
        pending.append(torch.cat([g[n] for n in names]))
        if len(pending) == args.interval:
            project(pending)
            raw_all += pending
            pending = []
    if pending:
        project(pending)
        raw_all += pending
    sync()
    t_c = time.perf_counter() - t
    raw = torch.stack(raw_all).double()
    norms = raw.norm(dim=1).cpu().numpy()
    raw = raw / raw.norm(dim=1, keepdim=True)
    exact = (raw @ raw.t()).cpu().numpy()
    del raw, raw_all, proj

    xa, xb = np.stack(a["vector"]).astype(np.float64), np.stack(b).astype(np.float64)
    xc = torch.cat(c).double().cpu().numpy()
    cos_ab = (unit(xa) * unit(xb)).sum(1)
    off = ~np.eye(len(enc), dtype=bool)
    err_a = np.abs(unit(xa) @ unit(xa).T - exact)[off]
    err_c = np.abs(unit(xc) @ unit(xc).T - exact)[off]
    res = {
        **meta, "lora_params": probe.n_params, "n_layers": len(names),
        "rank": args.rank, "dim": args.dim, "density": args.density,
        "a_s": round(t_a, 2), "b_s": round(t_b, 2), "c_s": round(t_c, 2), "c_matrix_build_s": round(t_matrix, 2),
        "c_projection_s": round(t_proj, 2), "c_gradients_s": round(t_c - t_proj, 2),
        "a_ex_s": round(len(enc) / t_a, 2), "b_ex_s": round(len(enc) / t_b, 2), "c_ex_s": round(len(enc) / t_c, 2),
        "ratio_a_b": round(t_b / t_a, 2), "ratio_a_c": round(t_c / t_a, 2),
        "min_cos_a_b": float(cos_ab.min()),
        "grad_norm_max_rel_diff_a_c": float(np.max(np.abs(a["grad_norm"] - norms) / norms)),
        "pairwise_cos_err_sparse_mean": float(err_a.mean()), "pairwise_cos_err_sparse_max": float(err_a.max()),
        "pairwise_cos_err_dense_mean": float(err_c.mean()), "pairwise_cos_err_dense_max": float(err_c.max()),
        "jl_scale_sqrt_2_over_d": float(np.sqrt(2 / args.dim)),
    }
    print(f"{'':28s}{'(a) batched+sparse':>20s}{'(b) bs1+sparse':>16s}{'(c) bs1+dense':>16s}")
    print(f"{'seconds':28s}{t_a:20.1f}{t_b:16.1f}{t_c:16.1f}")
    print(f"{'examples / s':28s}{res['a_ex_s']:20.2f}{res['b_ex_s']:16.2f}{res['c_ex_s']:16.2f}")
    print(f"{'|pairwise cos - exact| mean':28s}{res['pairwise_cos_err_sparse_mean']:20.4f}{'':16s}"
          f"{res['pairwise_cos_err_dense_mean']:16.4f}")
    print(f"(c) split: per-example autograd {t_c - t_proj:.1f} s, dense projection {t_proj:.1f} s")
    print(f"ratios: a/b {res['ratio_a_b']:.2f}x, a/c {res['ratio_a_c']:.2f}x; min cos(a, b) {res['min_cos_a_b']:.6f}; "
          f"dense matrix build {t_matrix:.1f} s (not charged to c); {probe.n_params:,} LoRA-B gradient entries")

    res.update(fused_row(model, enc, pad, cfg, probe, args.token_budget, a, t_a, sync))
    res["peak_rss_gb"] = round(peak_rss_gb(), 2)
    print(f"peak RSS (the process, all rows) {res['peak_rss_gb']:.2f} GB")
    save_result(args.out, f"grads-{slug(args.model)}-{res['device']}", res)


if __name__ == "__main__":
    main()

"""What a run will cost before it starts: tokens per pass, FLOPs, hours and GPU-hours (``siftlm plan``).

Tokens are counted by encoding a seeded sample of the data exactly as the passes will (template, loss mask,
max_length) and scaled to the whole set (or ``--scale-to``). FLOPs per token, with P the model's parameters
(Kaplan et al. 2020's 2P forward / 4P forward + backward rule): a forward pass (loss, uncond, lm-embed) 2P; the
grads pass 4P (forward, and a backward through the activations: LoRA needs no frozen-weight gradients); a LoRA
training epoch 4P, a full fine-tuning epoch 6P; the sentence encoder 2 x its own parameters. The passes are the
ones siftlm runs: the base pass is the trajectory's P_0, and the reference fine-tune evaluates the model after every
epoch (P_1..P_E, the last being the reference DavIR scores with). Time comes from a measured throughput when
``bench/loss_pass.py`` / ``bench/train_step.py`` / ``bench/grads.py`` results exist for this model and device (other
passes scaled by their FLOPs ratio; the grads pass by the loss pass's when only that exists, which on a CPU
underestimates it: a backward costs more than its FLOPs say), else from FLOPs at ``--mfu`` of the device's peak.
Model passes split over ``--gpus`` (Ray actors) perfectly; training is data-parallel over them (torchrun / accelerate launch / Ray
Train) at the scaling efficiency ``bench/train_parallel.py`` measured for this model and device at the nearest
world size, else at ``--train-efficiency``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from siftlm.config import DataConfig, PlanConfig, SignalConfig, UsageError, parse_number
from siftlm.data import open_dataset
from siftlm.errors import DataError, MissingInput, Unavailable
from siftlm.models.load import resolve_model_path
from siftlm.signals.prepare import prepare

GPU_PEAK_TFLOPS = 989.0        # H100 / H200 SXM dense bf16
SENTENCE_PARAMS = 22.7e6       # all-MiniLM-L6-v2


@dataclass
class Step:
    name: str
    tokens: float          # tokens processed (all epochs)
    flops: float
    hours: float           # wall time
    device_hours: float    # summed over devices
    source: str            # where the time comes from


def count_params(path: str) -> int:
    """Parameters of a transformers model folder, from its config alone (built on the meta device: no weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def cpu_peak_tflops(seconds: float = 0.5) -> float:
    """fp32 matmul TFLOP/s of this CPU, timed on 1024 x 1024 products."""
    a = torch.randn(1024, 1024)
    a @ a
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ a
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t) / 1e12


def measured(bench_dirs: str, model: str, device: str) -> dict:
    """tok/s of the loss engine and of the training loop measured for ``model`` on ``device`` (best dtype), if any."""
    slug = model.replace("builtin:", "").replace("/", "_")
    found = {}
    for folder in filter(None, (d.strip() for d in bench_dirs.split(","))):
        loss = next(iter(sorted(Path(folder).glob(f"loss_pass-{slug}-{device}*.json"))), None)
        if "loss" not in found and loss is not None:
            r = json.loads(loss.read_text())
            tok = max(v for k, v in r.items() if k.startswith("engine_") and k.endswith("_tok_s") and "compiled" not in k)
            found["loss"] = (tok, f"measured {tok:,.0f} tok/s", str(loss))
        train = Path(folder) / f"train_step-{slug}.json"
        if "train" not in found and train.exists() and device == "cpu":
            r = json.loads(train.read_text())
            tok = max(v for k, v in r.items() if k.startswith("siftlm_") and k.endswith("_tok_s"))
            found["train"] = (tok, f"measured {tok:,.0f} tok/s", str(train))
        grads = next(iter(sorted(Path(folder).glob(f"grads-{slug}-{device}*.json"))), None)
        if "grads" not in found and grads is not None:
            r = json.loads(grads.read_text())
            tok = r["real_tokens"] / r["a_s"]
            found["grads"] = (tok, f"measured {tok:,.0f} tok/s", str(grads))
        parallel = Path(folder) / f"train_parallel-{slug}.json"
        if "parallel" not in found and parallel.exists():
            rows = [r for r in json.loads(parallel.read_text())["rows"] if r["device"].startswith(device)]
            if rows:
                found["parallel"] = ({r["world"]: r["efficiency"] for r in rows}, "measured", str(parallel))
    return found


def train_efficiency(meas: dict, devices: int, assumed: float) -> tuple[float, str]:
    """Scaling efficiency of data-parallel training over ``devices``: measured at the nearest world size, else assumed."""
    if devices <= 1:
        return 1.0, ""
    if "parallel" in meas:
        by_world = meas["parallel"][0]
        world = min(by_world, key=lambda w: (abs(w - devices), -w))
        return by_world[world], f", data-parallel at the {by_world[world]:.2f} efficiency measured at {world}"
    return assumed, f", data-parallel at an assumed {assumed:.2f} efficiency (bench/train_parallel.py measures it)"


def token_counts(data: str, model: str, cfg: PlanConfig, src: DataConfig, signals: SignalConfig) -> dict:
    from transformers import AutoTokenizer

    note = ""
    try:
        path = resolve_model_path(model)
    except (MissingInput, Unavailable, UsageError):
        if not cfg.params:
            raise
        path, note = resolve_model_path("builtin:smollm2"), f"tokens counted with SmolLM2's tokenizer ({model} is not here)"
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    ds = open_dataset(data, src)
    n = len(ds.examples)
    if not n:
        raise DataError(f"{data}: no valid examples")
    if cfg.sample < n:
        keep = set(np.random.default_rng(0).choice(n, cfg.sample, replace=False).tolist())
        ds.examples = [e for i, e in enumerate(ds.examples) if i in keep]
    prep = prepare(ds, tok, SignalConfig(**{**signals.__dict__, "progress": False, "limit": None}))
    m = len(prep.encoded)
    if not m:
        raise DataError(f"{data}: every sampled example was rejected when encoded (max_length {signals.max_length}?)")
    full = sum(len(e.input_ids) for e in prep.encoded) / m
    resp = sum(e.n_response for e in prep.encoded) / m
    head = len(prep.uncond()[0].input_ids) - prep.uncond()[0].n_response if prep.uncond() else 0
    text = sum(len(e.messages[-1]["content"]) + len(e.messages[0]["content"]) for e in prep.examples) / 4 / m
    return {"path": path, "n_data": n, "n_sampled": m, "kept_share": m / min(n, cfg.sample), "tokens_per_example": full,
            "response_tokens": resp, "uncond_tokens": resp + head, "text_tokens": text, "note": note}


def plan(data: str, model: str, cfg: PlanConfig, *, src: DataConfig | None = None,
         signals: SignalConfig | None = None) -> dict:
    """Per-pass and per-flow estimates (see the module docstring)."""
    src, signals = src or DataConfig(), signals or SignalConfig()
    counts = token_counts(data, model, cfg, src, signals)
    params = int(parse_number(cfg.params.upper().replace("B", "e9").replace("M", "e6"))) if cfg.params \
        else count_params(counts["path"])
    n = (cfg.scale_to or counts["n_data"]) * counts["kept_share"]
    device = cfg.device if cfg.device != "auto" else ("cuda" if cfg.gpus else "cpu")
    devices = max(cfg.gpus, 1)
    if device == "cuda":
        peak = cfg.peak_tflops or GPU_PEAK_TFLOPS
        peak_src = f"FLOPs at {cfg.mfu:.0%} of {peak:g} TFLOP/s"
    else:
        peak = cfg.peak_tflops or cpu_peak_tflops()
        peak_src = f"FLOPs at {cfg.mfu:.0%} of {peak * 1e3:,.0f} GFLOP/s" + ("" if cfg.peak_tflops else " (matmul probe)")
    meas = measured(cfg.bench, model, device)
    train_mult = 6 if cfg.full else 4
    T, U, X = n * counts["tokens_per_example"], n * counts["uncond_tokens"], n * counts["text_tokens"]
    specs = [  # name, tokens, FLOPs per token per parameter, parameters, which measurement applies, split over devices
        ("loss (base, P_0)", T, 2, params, "loss", True),
        ("uncond (IFD)", U, 2, params, "loss", True),
        (f"reference fine-tune ({cfg.epochs} epochs, {'full' if cfg.full else 'LoRA'})", T * cfg.epochs, train_mult,
         params, "train", "train"),
        (f"loss after each epoch (P_1..P_{cfg.epochs}; the last is the reference's)", T * cfg.epochs, 2, params,
         "loss", True),
        ("grads (DPP / LESS features)", T, 4, params, "grads", True),
        ("lm-embed (repr)", T, 2, params, "loss", True),
        ("embed (sentence encoder)", X, 2, SENTENCE_PARAMS, None, True),
    ]
    eff, eff_note = train_efficiency(meas, devices, cfg.train_efficiency)
    steps = []
    for name, tokens, mult, p, which, split in specs:
        flops = mult * p * tokens
        if which == "grads" and "grads" not in meas and "loss" in meas and p == params:
            which = "loss"                            # no grads benchmark here: the loss pass's rate, scaled by FLOPs
        if which in meas and p == params:
            tok_s, source, _ = meas[which]
            base_mult = {"loss": 2, "grads": 4}.get(which, train_mult)
            device_s = tokens / tok_s * mult / base_mult
            if mult != base_mult:
                source += f", x{mult / base_mult:g} for the FLOPs"
        else:
            device_s, source = flops / (peak * 1e12 * cfg.mfu), peak_src
        if split == "train":                          # data-parallel: every device pays the efficiency loss
            device_s, source = device_s / eff, source + eff_note
        wall = device_s / devices
        steps.append(Step(name, tokens, flops, wall / 3600, device_s / 3600, source))
    flows = {
        "DavIR (siftlm run --by davir)": [steps[0], steps[1], steps[2], steps[3]],
        "learning percentage (cluster:lp_app)": [steps[0], steps[2], steps[3], steps[6]],
        "DPP on gradients (davir+dpp)": [steps[0], steps[1], steps[2], steps[3], steps[4]],
        "every score and feature (an experiment's pool)": steps,
    }
    return {"data": str(data), "model": model, "params": params, "examples": n, "device": device, "devices": devices,
            "train_efficiency": eff,
            "counts": counts, "steps": steps, "measurements": {k: v[2] for k, v in meas.items()},
            "flows": {k: (sum(s.hours for s in v), sum(s.device_hours for s in v)) for k, v in flows.items()}}

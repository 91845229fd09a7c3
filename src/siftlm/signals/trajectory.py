"""Fine-tune (LoRA by default, full as an option) and evaluate every training example before training and
after each epoch: the trajectory P_0..P_n that LP, LP_app and forgetting need, and the reference model
that DavIR needs (the base fine-tuned on the full set = the model after the last epoch).

The loop is ours rather than a Trainer's so it can use the same token-budget batches and response-only
loss as the signal engine, and resume exactly from the last finished epoch: each epoch folder holds the
adapter (safetensors) and the optimizer and scheduler state (loaded with ``weights_only=True``); the folder is
written under a temporary name and renamed, so its existence means the weights are saved, and a done marker is
written when that epoch's evaluation is stored. A run killed during an evaluation redoes only the evaluation.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from siftlm.config import TrainConfig, from_dict
from siftlm.data.io import atomic_write
from siftlm.models.batching import collate, plan_batches
from siftlm.models.forward import response_nll
from siftlm.models.load import folder_fingerprint, load_model, save_folder
from siftlm.models.template import Encoded
from siftlm.progress import bar
from siftlm.signals import store
from siftlm.signals.passes import pass_spec, run_pass
from siftlm.signals.prepare import Prepared

# evaluate(model, fingerprint, epoch) stores the loss pass of ``model`` for epoch ``epoch``
Evaluate = Callable[[torch.nn.Module, str, int], None]


def epoch_dir(out: Path, epoch: int) -> Path:
    return out / f"epoch-{epoch}"


def _epochs(out: Path, marker: str) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("epoch-*")
                  if p.name.split("-")[1].isdigit() and (p / marker).exists())


def _finished_epochs(out: Path) -> list[int]:
    """Epochs whose weights are saved and whose evaluation is stored."""
    return _epochs(out, "siftlm-done")


def _saved_epochs(out: Path) -> list[int]:
    """Epochs whose weights and optimizer state are saved (the folder is renamed into place only when complete)."""
    return _epochs(out, OPTIMIZER_FILE)


MIN_FREE_BYTES = 64 << 20     # below this, a failed write is taken for a full disk
OPTIMIZER_FILE = "siftlm-optimizer.pt"


def write_folder(folder: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` into a temporary folder beside ``folder``, then rename it into place: a reader sees the whole
    folder or none. Whatever fails (an OSError, torch's "PytorchStreamWriter failed writing file", safetensors'
    SafetensorError) removes the temporary folder; a full disk is raised as one OSError naming the folder."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        full = "No space left on device" in str(e) or getattr(e, "errno", None) == errno.ENOSPC
        if full or (not isinstance(e, OSError) and shutil.disk_usage(tmp.parent).free < MIN_FREE_BYTES):
            raise OSError(errno.ENOSPC, "No space left on device", str(folder)) from e
        raise
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _save(model, cfg: TrainConfig, folder: Path, opt, sched, tokenizer) -> None:
    """The epoch folder: weights (a full model folder must load on its own), then optimizer and scheduler state."""
    def write(tmp: Path) -> None:
        save_folder(model, tmp, tokenizer if cfg.full else None)
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / OPTIMIZER_FILE)
    write_folder(folder, write)


def model_fingerprint(base_fp: str, folder: Path, cfg: TrainConfig) -> str:
    """Same fingerprint ``load_model`` gives when the folder is loaded later (adapter or full model)."""
    return folder_fingerprint(folder) if cfg.full else f"{base_fp}+{folder_fingerprint(folder)}"


def train(model, base_fp: str, encoded: list[Encoded], out: str | Path, cfg: TrainConfig, *, pad_id: int,
          evaluate: Evaluate, on_step: Callable[[int], None] | None = None, tokenizer=None) -> torch.nn.Module:
    """Train ``model`` on ``encoded`` for ``cfg.epochs`` epochs, evaluating P_0..P_n through ``evaluate``.

    Returns the trained model (a PeftModel for LoRA). Resumes after the last epoch with a done marker.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "siftlm-train.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.manual_seed(cfg.seed)
    saved = _saved_epochs(out)
    evaluate(model, base_fp, 0)  # before LoRA is injected (in place): P_0 is always the base (a cache hit on resume)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not cfg.full:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lengths = [len(e.input_ids) for e in encoded]
    batches = plan_batches(lengths, cfg.token_budget)
    total_steps = cfg.epochs * len(batches)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(1, total_steps)))
    start = 1
    if saved:
        last = saved[-1]
        folder = epoch_dir(out, last)
        _load_weights(model, folder, cfg)
        state = torch.load(folder / OPTIMIZER_FILE, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = last + 1
        if not (folder / "siftlm-done").exists():     # killed during this epoch's evaluation: redo only that
            model.eval()
            evaluate(model, model_fingerprint(base_fp, folder, cfg), last)
            (folder / "siftlm-done").write_text("")
    for epoch in range(start, cfg.epochs + 1):
        model.train()
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        for b in rng.permutation(len(batches)):
            batch = collate(encoded, batches[b], pad_id)
            nll, _ = response_nll(model, batch)
            loss = nll.sum() / nll.numel()          # token mean over the batch
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if on_step:
                on_step(len(batches[b]))
        model.eval()
        folder = epoch_dir(out, epoch)
        _save(model, cfg, folder, opt, sched, tokenizer)
        evaluate(model, model_fingerprint(base_fp, folder, cfg), epoch)
        (folder / "siftlm-done").write_text("")
    return model


def _load_weights(model, folder: Path, cfg: TrainConfig) -> None:
    from safetensors.torch import load_file

    if cfg.full:
        state = {}
        for f in sorted(folder.glob("*.safetensors")):
            state.update(load_file(f))
        model.load_state_dict(state, strict=False)
    else:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))


def trajectory_fingerprints(out: str | Path, base_fp: str) -> list[str]:
    """Model fingerprints of P_0..P_n for a finished training folder."""
    out = Path(out)
    cfg = from_dict(TrainConfig, json.loads((out / "siftlm-train.json").read_text()))
    finished = _finished_epochs(out)
    if finished != list(range(1, cfg.epochs + 1)):
        raise FileNotFoundError(f"{out}: training not finished (epochs done: {finished} of {cfg.epochs})")
    return [base_fp] + [model_fingerprint(base_fp, epoch_dir(out, e), cfg) for e in finished]


def identity(prep: Prepared, base_fp: str, tcfg: TrainConfig) -> dict:
    """What a reference training is: the data as encoded, the base model's weights, the settings that change weights."""
    return {"dataset": prep.fingerprint, "base": base_fp, "config": tcfg.identity()}


def stored_identity(folder: str | Path) -> dict | None:
    """A training folder's identity (settings added since it was written count as their defaults), or None."""
    path = Path(folder) / "siftlm-identity.json"
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    stored["config"] = from_dict(TrainConfig, stored.get("config", {})).identity()
    return stored


def check_folder(folder: str | Path, ident: dict) -> None:
    """An error saying what differs, when ``folder`` holds a training run of another identity."""
    stored = stored_identity(folder)
    if stored is None or stored == ident:
        return
    what = [w for w, k in (("other data", "dataset"), ("another base model", "base")) if stored.get(k) != ident[k]]
    what += [f"{k} {stored['config'].get(k)!r} (now {v!r})" for k, v in ident["config"].items()
             if stored["config"].get(k) != v]
    raise RuntimeError(f"{folder}: holds a reference trained on {', '.join(what)}; use another --out, or point "
                       "--reference at a training folder for this data")


def _index(store_root: str | Path, ident: dict) -> Path:
    return Path(store_root) / "references" / f"{store.fingerprint(ident)}.json"


def find_reference(prep: Prepared, base_fp: str, tcfg: TrainConfig) -> Path | None:
    """A finished reference training of this identity saved anywhere through the same store (``siftlm train --out
    X`` then ``siftlm score`` finds X), or None."""
    entry = _index(prep.cfg.store, identity(prep, base_fp, tcfg))
    if not entry.exists():
        return None
    folder = Path(json.loads(entry.read_text())["folder"])
    try:
        trajectory_fingerprints(folder, base_fp)
    except (FileNotFoundError, ValueError):
        return None
    return folder if stored_identity(folder) == identity(prep, base_fp, tcfg) else None


def train_reference(lm, prep: Prepared, out: str | Path, tcfg: TrainConfig) -> tuple[list[pd.DataFrame], list[str]]:
    """Fine-tune the base on all examples with the trajectory evaluated into the store.

    Returns (loss-pass frames P_0..P_n, their model fingerprints). A finished folder for the same data, model
    and settings is reused as it is; one for other data is an error, never silently mixed. The store records
    where each finished reference lives (``find_reference``). Training changes ``lm.model`` in place, so when it
    runs here ``lm.fingerprint`` becomes the trained model's: a later pass with ``lm`` is keyed by the weights it
    really uses (the base passes a caller needs must run before this).
    """
    out = Path(out)
    ident = identity(prep, lm.fingerprint, tcfg)
    check_folder(out, ident)
    out.mkdir(parents=True, exist_ok=True)
    (out / "siftlm-identity.json").write_text(json.dumps(ident, indent=2))
    trained = False
    try:
        fps = trajectory_fingerprints(out, lm.fingerprint)
    except FileNotFoundError:
        trained = True
        def evaluate(model, fp, epoch):
            run_pass(prep, "loss", model, fp, label=f"eval P_{epoch}")

        with bar("train", tcfg.epochs * len(prep.encoded), enabled=prep.cfg.progress) as advance:
            train(lm.model, lm.fingerprint, prep.encoded, out, tcfg, pad_id=prep.tokenizer.pad_token_id,
                  evaluate=evaluate, on_step=advance, tokenizer=prep.tokenizer)
        fps = trajectory_fingerprints(out, lm.fingerprint)
    with atomic_write(_index(prep.cfg.store, ident)) as tmp:
        tmp.write_text(json.dumps({"folder": str(out.resolve()), "identity": ident}, indent=2))
    frames = []
    for epoch, fp in enumerate(fps):  # cached when training ran here; recomputed from the saved weights if not
        cached = store.is_complete(prep.cfg.store, pass_spec(prep, "loss", lm.model, fp))
        model = lm.model if cached or epoch == 0 else _load_epoch(lm, epoch_dir(out, epoch), tcfg, fp)
        frames.append(run_pass(prep, "loss", model, fp, label=f"eval P_{epoch}"))
    if trained:
        lm.fingerprint = fps[-1]       # lm.model now holds the last epoch's weights
    return frames, fps


def _load_epoch(lm, folder: Path, tcfg: TrainConfig, fp: str):
    """The model saved after one epoch, loaded on its own (LoRA adapter over the base, or a full model)."""
    device = str(next(lm.model.parameters()).device)
    same = {"device": device, "dtype": lm.model.siftlm_compute_dtype, "quiet": True,   # the trained model's precision
            "master_fp32": next(lm.model.parameters()).dtype == torch.float32}
    loaded = (load_model(str(folder), **same) if tcfg.full else load_model(lm.path, adapter=str(folder), **same))
    if loaded.fingerprint != fp:
        raise RuntimeError(f"{folder}: weights changed since training (fingerprint {loaded.fingerprint} != {fp})")
    return loaded.model

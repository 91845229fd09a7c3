"""The reference model and the trajectory: fine-tune the base on every example (``siftlm.train.loop``) with every
example evaluated before training and after each epoch, the trajectory P_0..P_n that LP, LP_app and forgetting need,
and the reference model that DavIR needs (the base fine-tuned on the full set = the model after the last epoch).

A training folder is keyed (``siftlm.keyed``) by the data as encoded, the base model's weights and the settings
that change the trained weights; the store records where each finished reference lives, so ``siftlm train --out X``
then ``siftlm score`` finds X.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch

from siftlm.backends import Runtime
from siftlm.config import TrainConfig, from_dict
from siftlm.errors import KeyMismatch
from siftlm.files import atomic_write
from siftlm.keyed import Keyed, open_keyed
from siftlm.keyed import stored_identity as stored_raw
from siftlm.models.load import LoadedModel, load_model
from siftlm.progress import bar
from siftlm.signals import store
from siftlm.signals.passes import pass_spec, run_pass
from siftlm.signals.prepare import Prepared
from siftlm.train.launch import elsewhere, train_elsewhere
from siftlm.train.loop import epoch_dir, resumed_at, train, trajectory_fingerprints


class Reference(NamedTuple):
    frames: list[pd.DataFrame]       # the loss pass of P_0..P_n, in prep order
    fingerprints: list[str]          # P_0 (the base) .. P_n (the reference model)
    model: LoadedModel | None = None  # the reference model's handle when its weights are in memory (trained here)


def identity(prep: Prepared, base_fp: str, tcfg: TrainConfig) -> dict:
    """What a training is: the data as encoded, the base model's weights, the settings that change weights."""
    return {"dataset": prep.fingerprint, "base": base_fp, "config": tcfg.identity()}


def _normalize(ident: dict) -> dict:
    """Settings added to siftlm since a folder was written count as their defaults."""
    return {**ident, "config": from_dict(TrainConfig, ident.get("config", {})).identity()}


def stored_identity(folder: str | Path) -> dict | None:
    """A training folder's identity (normalised), or None."""
    raw = stored_raw(folder)
    return _normalize(raw) if raw is not None else None


def open_training(folder: str | Path, ident: dict, what: str = "a reference training") -> Keyed:
    """The keyed training folder: created, or refused when it holds a training of another identity (what differs is
    named: data, base model, settings)."""
    return open_keyed(folder, ident, what=what, normalize=_normalize,
                      labels={"dataset": "other data", "base": "another base model"})


def check_folder(folder: str | Path, ident: dict) -> None:
    """Refuse, before any work, a folder that holds a training of another identity."""
    if stored_raw(folder) is not None:
        open_training(folder, ident)


def _index(store_root: str | Path, ident: dict) -> Path:
    return Path(store_root) / "references" / f"{store.fingerprint(ident)}.json"


def finished(folder: str | Path, base_fp: str) -> bool:
    try:
        trajectory_fingerprints(folder, base_fp)
        return True
    except (FileNotFoundError, ValueError):
        return False


def find_reference(prep: Prepared, base_fp: str, tcfg: TrainConfig, runtime: Runtime | None = None) -> Path | None:
    """A finished reference training of this identity saved anywhere through the same store, or None."""
    ident = identity(prep, base_fp, tcfg)
    entry = _index((runtime or Runtime.of(prep.cfg)).store, ident)
    if not entry.exists():
        return None
    folder = Path(json.loads(entry.read_text())["folder"])
    return folder if finished(folder, base_fp) and stored_identity(folder) == _normalize(ident) else None


def evaluate_epoch(prep: Prepared, lm: LoadedModel, epoch: int, runtime: Runtime | None = None) -> None:
    """The trajectory's evaluation after ``epoch``: the loss pass of every training example, into the store."""
    run_pass(prep, "loss", lm, runtime=runtime, label=f"eval P_{epoch}")


def train_reference(lm: LoadedModel, prep: Prepared, out: str | Path, tcfg: TrainConfig, *,
                    runtime: Runtime | None = None) -> Reference:
    """Fine-tune the base on all examples with the trajectory evaluated into the store (or reuse a finished folder
    of the same identity; another identity is refused). When training runs here ``lm.model`` is trained in place
    (``lm`` is then marked ``trained_into``: run the base passes first) and ``Reference.model`` is the reference's
    handle."""
    rt = runtime or Runtime.of(prep.cfg)
    ident = identity(prep, lm.fingerprint, tcfg)
    keyed = open_training(out, ident)
    trained = None
    if not finished(keyed.folder, lm.fingerprint):
        if elsewhere(rt.executor, tcfg):                # Ray Train workers run the same loop and evaluations
            train_elsewhere(lm, prep, keyed, tcfg, rt.executor, evaluate=evaluate_epoch)
        else:
            with bar("train", tcfg.epochs * len(prep.encoded), enabled=rt.progress,
                     start=resumed_at(keyed.folder, len(prep.encoded))) as advance:
                trained = train(lm, prep.encoded, keyed, tcfg, pad_id=prep.tokenizer.pad_token_id,
                                evaluate=lambda model, epoch: evaluate_epoch(prep, model, epoch, rt), on_step=advance,
                                tokenizer=prep.tokenizer).lm
    fps = trajectory_fingerprints(keyed.folder, lm.fingerprint)
    with atomic_write(_index(rt.store, ident)) as tmp:
        tmp.write_text(json.dumps({"folder": str(keyed.folder.resolve()), "identity": ident}, indent=2))
    frames = []
    for epoch, fp in enumerate(fps):  # cached when training ran here; recomputed from the saved weights if not
        if epoch == 0:
            model = lm                 # P_0 is stored before any training touches the weights
        elif trained is not None and fp == trained.fingerprint:
            model = trained
        elif store.is_complete(rt.store, pass_spec(prep, "loss", replace(lm, fingerprint=fp))):
            model = replace(lm, fingerprint=fp)       # served from the store: the weights are not read
        else:
            model = _load_epoch(lm, epoch_dir(keyed.folder, epoch), tcfg, fp)
        frames.append(run_pass(prep, "loss", model, runtime=rt, label=f"eval P_{epoch}"))
    return Reference(frames, fps, trained if trained is not None and trained.fingerprint == fps[-1] else None)


def _load_epoch(lm: LoadedModel, folder: Path, tcfg: TrainConfig, fp: str) -> LoadedModel:
    """The model saved after one epoch, loaded on its own (LoRA adapter over the base, or a full model) in the
    precision of ``lm``."""
    device = str(next(lm.model.parameters()).device)
    same = {"device": device, "dtype": lm.precision.name if lm.precision else "float32", "quiet": True,
            "master_fp32": next(lm.model.parameters()).dtype == torch.float32}
    loaded = (load_model(str(folder), **same) if tcfg.full else load_model(lm.path, adapter=str(folder), **same))
    if loaded.fingerprint != fp:
        raise KeyMismatch(f"{folder}: weights changed since training (fingerprint {loaded.fingerprint} != {fp})")
    return loaded

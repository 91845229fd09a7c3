"""Supervised fine-tuning on a selection (``siftlm finetune``), with the trainer that makes the reference models.

The same loop as the reference fine-tune (``siftlm.signals.trajectory.train``): the same response-only loss, token-
budget batches, chat template and LoRA defaults as every pass that scored the data, seeded, resumable per epoch. The
result is ``OUT/final``: a PEFT adapter folder (LoRA) or a full transformers model folder, which load with

    model = AutoModelForCausalLM.from_pretrained(BASE); model = PeftModel.from_pretrained(model, "OUT/final")   # LoRA
    model = AutoModelForCausalLM.from_pretrained("OUT/final")                                                  # --full
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from siftlm.config import TrainConfig
from siftlm.data import Dataset
from siftlm.data.io import atomic_write
from siftlm.progress import bar
from siftlm.signals.prepare import Prepared
from siftlm.signals.trajectory import (
    OPTIMIZER_FILE,
    check_folder,
    epoch_dir,
    identity,
    train,
    trajectory_fingerprints,
    write_folder,
)


def restrict(ds: Dataset, selection: str | Path) -> Dataset:
    """The dataset's examples whose ids a selection.parquet lists, in the selection's order; an id the data does
    not hold is an error (wrong dataset)."""
    ids = pd.read_parquet(selection, columns=["id"])["id"].tolist()
    by_id = {e.id: e for e in ds.examples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} ids of {selection} are not in {ds.path} (first: {missing[0]}); wrong dataset?")
    return Dataset(ds.path, ds.format, [by_id[i] for i in ids], ds.rejects, ds.n_read, ds.n_skipped,
                   len(ds.examples) - len(ids))


def finetune(lm, prep: Prepared, out: str | Path, tcfg: TrainConfig) -> dict:
    """Train on every prepared example (resuming after the last finished epoch) and put the result in ``OUT/final``;
    returns what was trained: {"final", "fingerprint", "epochs", "examples", "tokens", "config"}. As in
    ``train_reference``, training changes ``lm.model`` in place, so when it runs here ``lm.fingerprint`` becomes the
    trained model's; when a finished folder is reused ``lm`` stays the base (load ``OUT/final`` for the trained one)."""
    out = Path(out)
    ident = identity(prep, lm.fingerprint, tcfg)
    check_folder(out, ident)
    out.mkdir(parents=True, exist_ok=True)
    (out / "siftlm-identity.json").write_text(json.dumps(ident, indent=2))
    try:
        fps = trajectory_fingerprints(out, lm.fingerprint)
    except FileNotFoundError:
        with bar("finetune", tcfg.epochs * len(prep.encoded), enabled=prep.cfg.progress) as advance:
            train(lm.model, lm.fingerprint, prep.encoded, out, tcfg, pad_id=prep.tokenizer.pad_token_id,
                  evaluate=lambda *a: None, on_step=advance, tokenizer=prep.tokenizer)
        fps = trajectory_fingerprints(out, lm.fingerprint)
        lm.fingerprint = fps[-1]       # lm.model now holds the last epoch's weights
    final = out / "final"
    if not (final / "siftlm-done").exists():
        write_folder(final, lambda tmp: shutil.copytree(epoch_dir(out, tcfg.epochs), tmp,
                                                        ignore=shutil.ignore_patterns(OPTIMIZER_FILE)))
    info = {"final": str(final), "fingerprint": fps[-1], "base": lm.path, "epochs": tcfg.epochs,
            "examples": len(prep.encoded), "tokens": int(sum(len(e.input_ids) for e in prep.encoded)),
            "config": tcfg.identity()}
    with atomic_write(out / "siftlm-finetune.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return info

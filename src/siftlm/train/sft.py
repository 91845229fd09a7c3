"""Supervised fine-tuning on a selection (``siftlm finetune``), with the trainer that makes the reference models.

The same loop as the reference fine-tune (``siftlm.train.loop.train``): the same response-only loss, token-
budget batches, chat template and LoRA defaults as every pass that scored the data, seeded, resumable per epoch. The
result is ``OUT/final``: a PEFT adapter folder (LoRA) or a full transformers model folder, which load with

    model = AutoModelForCausalLM.from_pretrained(BASE); model = PeftModel.from_pretrained(model, "OUT/final")   # LoRA
    model = AutoModelForCausalLM.from_pretrained("OUT/final")                                                  # --full
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from siftlm.backends import Runtime
from siftlm.config import TrainConfig
from siftlm.data import Dataset
from siftlm.errors import DataError
from siftlm.files import write_folder
from siftlm.models.load import LoadedModel
from siftlm.progress import bar
from siftlm.signals.prepare import Prepared
from siftlm.train.dist import ranks
from siftlm.train.launch import elsewhere, train_elsewhere
from siftlm.train.loop import OPTIMIZER_FILE, epoch_dir, resumed_at, train, trajectory_fingerprints
from siftlm.train.reference import finished, identity, open_training


def restrict(ds: Dataset, selection: str | Path) -> Dataset:
    """The dataset's examples whose ids a selection.parquet lists, in the selection's order; an id the data does
    not hold is an error (wrong dataset)."""
    ids = pd.read_parquet(selection, columns=["id"])["id"].tolist()
    by_id = {e.id: e for e in ds.examples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{len(missing)} ids of {selection} are not in {ds.path} (first: {missing[0]}); wrong dataset?")
    return Dataset(ds.path, ds.format, [by_id[i] for i in ids], ds.rejects, ds.n_read, ds.n_skipped,
                   len(ds.examples) - len(ids))


class Finetuned(NamedTuple):
    info: dict                       # {"final", "fingerprint", "epochs", "examples", "tokens", "config", ...}
    model: LoadedModel | None        # the trained model's handle when training ran here (its weights in memory)


def finetune(lm: LoadedModel, prep: Prepared, out: str | Path, tcfg: TrainConfig, *,
             runtime: Runtime | None = None) -> Finetuned:
    """Train on every prepared example (resuming after the last saved epoch) and put the result in ``OUT/final``;
    returns what was trained ({"final", "fingerprint", "epochs", "examples", "tokens", "config"}) and, when training
    ran here, the trained model's handle (``lm`` is then marked ``trained_into``: its module holds the new weights).
    Without a handle, load ``OUT/final``."""
    rt = runtime or Runtime.of(prep.cfg)
    keyed = open_training(out, identity(prep, lm.fingerprint, tcfg), "a fine-tune")
    trained = None
    if not finished(keyed.folder, lm.fingerprint):
        if elsewhere(rt.executor, tcfg):               # Ray Train workers run the same loop
            train_elsewhere(lm, prep, keyed, tcfg, rt.executor)
        else:
            with bar("finetune", tcfg.epochs * len(prep.encoded), enabled=rt.progress,
                     start=resumed_at(keyed.folder, len(prep.encoded))) as advance:
                trained = train(lm, prep.encoded, keyed, tcfg, pad_id=prep.tokenizer.pad_token_id, on_step=advance,
                                tokenizer=prep.tokenizer)
    fps = trained.fingerprints if trained is not None else trajectory_fingerprints(keyed.folder, lm.fingerprint)
    final = keyed.path("final")
    rk = ranks()
    if rk.main and not keyed.done("final"):
        write_folder(final, lambda tmp: shutil.copytree(epoch_dir(keyed.folder, tcfg.epochs), tmp,
                                                        ignore=shutil.ignore_patterns(OPTIMIZER_FILE)))
        keyed.mark("final")
    info = {"final": str(final), "fingerprint": fps[-1], "base": lm.path, "epochs": tcfg.epochs,
            "examples": len(prep.encoded), "tokens": int(sum(len(e.input_ids) for e in prep.encoded)),
            "config": tcfg.identity()}
    if rk.main:
        keyed.write("siftlm-finetune.json", json.dumps(info, indent=2))
    rk.barrier()
    return Finetuned(info, trained.lm if trained is not None else None)

"""Where a training runs: here (one process, or every rank a launcher started: ``torchrun``, ``accelerate launch``),
or on a Ray cluster through Ray Train (``--backend ray --workers N``), the same loop in every case. The executor is
the caller's (built by the CLI or a recipe), never built here.

For Ray, ``TrainJob`` is what each Ray Train worker runs: it fetches the prepared data from the object store, loads
the model from its files (the driver's model as it was loaded, never weights trained in memory), opens the same keyed
folder and runs ``siftlm.train.loop.train``; Ray Train has set up the process group, so the loop sees its rank and
world size exactly as under ``torchrun``. Evaluations inside the workers run their passes locally, sharing the
store's shards; the driver then reads the finished folder and the store like any finished training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from siftlm.backends import Executor, fetch
from siftlm.config import TrainConfig, UsageError
from siftlm.errors import KeyMismatch
from siftlm.keyed import open_keyed
from siftlm.models.load import LoadedModel, load_model
from siftlm.train.dist import launched_world
from siftlm.train.loop import train


@dataclass
class TrainJob:
    prep: object                 # the Prepared data (or the executor's reference to it)
    source: dict                 # how a worker loads the model (``load_model``'s arguments)
    fingerprint: str             # what the driver's model handle says the weights are
    folder: str
    identity: dict
    what: str
    cfg: TrainConfig
    labels: dict
    evaluate: Callable | None    # evaluate(prep, lm, epoch), a picklable function, or None

    def __call__(self) -> None:
        prep = fetch(self.prep)          # each worker computes its share of a pass here (no runtime: this process)
        lm = load_model(**self.source, quiet=True)
        if lm.fingerprint != self.fingerprint:
            raise KeyMismatch(f"a training worker loaded {self.source['spec']} as {lm.fingerprint}, the driver has "
                              f"{self.fingerprint}: every node must see the same model files")
        keyed = open_keyed(self.folder, self.identity, what=self.what, labels=self.labels)
        evaluate = (lambda model, epoch: self.evaluate(prep, model, epoch)) if self.evaluate else None
        train(lm, prep.encoded, keyed, self.cfg, pad_id=prep.tokenizer.pad_token_id, evaluate=evaluate,
              tokenizer=prep.tokenizer)


def elsewhere(ex: Executor | None, tcfg: TrainConfig) -> bool:
    """Whether this training runs on the executor's workers rather than here; a local run asked for several workers
    without a launcher is a usage error saying how to launch it."""
    if ex is not None and ex.remote:
        return True
    if tcfg.workers > 1 and launched_world() == 1:
        raise UsageError(f"--workers {tcfg.workers} needs --backend ray, or a launcher that starts the ranks: "
                         f"torchrun --nproc_per_node {tcfg.workers} -m siftlm ... or accelerate launch --num_processes "
                         f"{tcfg.workers} -m siftlm ...")
    return False


def train_elsewhere(lm: LoadedModel, prep, keyed, tcfg: TrainConfig, ex: Executor, *,
                    evaluate: Callable | None = None) -> None:
    """Run the training of ``keyed`` on the executor ``ex`` (Ray Train workers)."""
    if not lm.source:
        raise UsageError("training on Ray needs a model loaded from files (each worker loads it); this one is not")
    prep = replace(prep, cfg=replace(prep.cfg, store=str(Path(prep.cfg.store).resolve())))   # workers run elsewhere
    job = TrainJob(ex.share(prep), lm.source, lm.fingerprint, str(keyed.folder.resolve()), keyed.identity, keyed.what,
                   tcfg, {"dataset": "other data", "base": "another base model"}, evaluate)
    ex.train(job, workers=max(1, tcfg.workers), use_gpu=torch.cuda.is_available())

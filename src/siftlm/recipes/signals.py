"""One model pass over a dataset file: read, load the model, prepare, run the pass (cached), optionally write it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from siftlm.config import DataConfig, GradConfig, SignalConfig, UsageError, closest
from siftlm.data import open_dataset, write_rejects
from siftlm.data.write import require_examples
from siftlm.models.load import load_model, load_sentence_model
from siftlm.recipes.dpo import policy_reference_table
from siftlm.recipes.runtime import runtime_for
from siftlm.signals.passes import PASSES, run_pass
from siftlm.signals.prepare import Prepared, prepare, prepare_pairs, prepare_texts
from siftlm.signals.table import write_frame


def rejects_path(out: str | Path | None, store: str, data: str) -> Path:
    """Where ``siftlm signals`` writes its rejects: beside ``--out`` (``<out>.rejects.jsonl``), else in the store."""
    if out:
        return Path(f"{out}.rejects.jsonl")
    return Path(store) / f"rejects-{Path(str(data)).stem.replace('/', '_')}.jsonl"


def compute_signals(data: str, name: str, cfg: SignalConfig, *, model: str | None = None, adapter: str | None = None,
                    grad: GradConfig | None = None, text: str = "full", src: DataConfig | None = None,
                    out: str | Path | None = None) -> tuple[pd.DataFrame, Prepared]:
    """Rows of pass ``name`` for the dataset (``pairs`` with an adapter: policy and reference, plus the pair
    scores), and the prepared data; written to ``out`` (.parquet or .npy) when given, the rejects beside it."""
    if name not in PASSES:
        raise UsageError(f"unknown pass {name!r}{closest(name, PASSES)}; known: {', '.join(PASSES)}")
    src = src or DataConfig()
    rt = runtime_for(cfg)
    ds = require_examples(open_dataset(data, src), rejects_path(out, cfg.store, str(data or src.dataset_name)))
    if name == "embed":
        lm = load_sentence_model(model or "builtin:all-minilm-l6-v2")
        prep = prepare_texts(ds, cfg, part=text)
        frame = run_pass(prep, "embed", lm, runtime=rt, options={"part": text}, label="sentence embeddings")
    else:
        lm = load_model(model or "builtin:smollm2", adapter=adapter, dtype=cfg.dtype)
        if name == "pairs":
            prep = prepare_pairs(ds, lm.tokenizer, cfg)
            frame = policy_reference_table(lm, prep, rt)
        else:
            prep = prepare(ds, lm.tokenizer, cfg)
            frame = run_pass(prep, name, lm, runtime=rt, options={"grad": grad})
    write_rejects(prep.rejects, rejects_path(out, cfg.store, ds.path))
    if out:
        meta = {"pass": name, "model": model, "adapter": adapter, "text": text,
                "signals": {k: getattr(cfg, k) for k in ("max_length", "template", "loss_on", "dtype")},
                "grad": asdict(grad) if grad is not None and name == "grads" else None}
        write_frame(frame, out, meta)
    return frame, prep

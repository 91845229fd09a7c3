"""One model pass over a dataset file: read, load the model, prepare, run the pass (cached), optionally write it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from siftlm.config import GradConfig, SignalConfig
from siftlm.data import read_dataset
from siftlm.models.load import load_model, load_sentence_model
from siftlm.recipes.dpo import policy_reference_table
from siftlm.signals.passes import PASSES, run_pass
from siftlm.signals.prepare import prepare, prepare_pairs, prepare_texts
from siftlm.signals.table import write_frame


def compute_signals(data: str, name: str, cfg: SignalConfig, *, model: str | None = None, adapter: str | None = None,
                    grad: GradConfig | None = None, text: str = "full", format: str | None = None,
                    out: str | Path | None = None) -> pd.DataFrame:
    """Rows of pass ``name`` for the dataset (``pairs`` with an adapter: policy and reference, plus the pair
    scores); also written to ``out`` (.parquet or .npy) when given."""
    if name not in PASSES:
        raise ValueError(f"unknown pass {name!r}; known: {', '.join(PASSES)}")
    ds = read_dataset(data, format=format)
    if name == "embed":
        lm = load_sentence_model(model or "builtin:all-minilm-l6-v2")
        frame = run_pass(prepare_texts(ds, cfg, part=text), "embed", lm.model, lm.fingerprint, options={"part": text},
                         label="sentence embeddings")
    else:
        lm = load_model(model or "builtin:smollm2", adapter=adapter)
        if name == "pairs":
            frame = policy_reference_table(lm, prepare_pairs(ds, lm.tokenizer, cfg))
        else:
            frame = run_pass(prepare(ds, lm.tokenizer, cfg), name, lm.model, lm.fingerprint, options={"grad": grad})
    if out:
        write_frame(frame, out)
    return frame

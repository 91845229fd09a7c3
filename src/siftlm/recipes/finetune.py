"""Fine-tune a model on a selection: ``selected.jsonl``, or a selection.parquet of a larger file."""

from __future__ import annotations

from pathlib import Path

from siftlm.config import DataConfig, SignalConfig, TrainConfig
from siftlm.data import open_dataset, write_rejects
from siftlm.models.load import load_model
from siftlm.recipes.runtime import runtime_for
from siftlm.signals.prepare import prepare
from siftlm.train.sft import finetune, restrict


def run_finetune(data, model: str, out: str | Path, signals: SignalConfig, tcfg: TrainConfig, *,
                 src: DataConfig | None = None, selection: str | Path | None = None) -> tuple[dict, object]:
    """Read (and restrict to ``selection``), prepare and fine-tune; writes OUT/rejects.jsonl; returns (info, prep)."""
    lm = load_model(model, dtype=signals.dtype, master_fp32=tcfg.full)
    ds = open_dataset(data, src or DataConfig())
    if selection:
        ds = restrict(ds, selection)
    prep = prepare(ds, lm.tokenizer, signals)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_rejects(prep.rejects, Path(out) / "rejects.jsonl")
    return finetune(lm, prep, out, tcfg, runtime=runtime_for(signals)).info, prep

"""Preference data end to end: the pair table of a policy against its reference (with the pair scores), and DPO
training with reference log-probs from the cached pair pass."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from siftlm.backends import Runtime
from siftlm.config import DataConfig, DPOTrainConfig, SignalConfig
from siftlm.data import open_dataset, write_rejects
from siftlm.models.load import load_model
from siftlm.recipes.runtime import runtime_for
from siftlm.scores import add_scores
from siftlm.signals.passes import run_pass
from siftlm.signals.prepare import Prepared, prepare_pairs
from siftlm.signals.table import pair_table
from siftlm.train.dpo import train_dpo


def policy_reference_table(lm, prep: Prepared, runtime: Runtime | None = None) -> pd.DataFrame:
    """Pair table for a loaded model: with a PEFT adapter, the policy is model + adapter and the reference the
    model with the adapter disabled (both passes cached); without one, only the reference columns.
    The pair scores ``dpo_margin`` and ``davir_margin`` are added when there is a policy."""
    if not hasattr(lm.model, "disable_adapter"):
        return pair_table(run_pass(prep, "pairs", lm, runtime=runtime, label="reference log-probs"))
    with lm.model.disable_adapter():
        ref = run_pass(prep, "pairs", lm.without_adapter(), runtime=runtime, label="reference log-probs")
    policy = run_pass(prep, "pairs", lm, runtime=runtime, label="policy log-probs")
    return add_scores(pair_table(ref, policy), ["dpo_margin", "davir_margin"])[0]


def run_dpo(data: str, model: str, out: str | Path, signals: SignalConfig, dcfg: DPOTrainConfig, *,
            src: DataConfig | None = None, callbacks=None) -> tuple[Prepared, dict]:
    """Encode the pairs, write their rejects, run (or reuse) the reference pair pass and train with TRL."""
    lm = load_model(model, dtype=signals.dtype, master_fp32=dcfg.full)
    prep = prepare_pairs(open_dataset(data, src or DataConfig()), lm.tokenizer, signals)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_rejects(prep.rejects, out / "rejects.jsonl")
    ref = run_pass(prep, "pairs", lm, runtime=runtime_for(signals), label="reference log-probs")
    return prep, train_dpo(lm, prep, ref, out, dcfg, callbacks=callbacks)

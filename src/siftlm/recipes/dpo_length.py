"""Length dependence of DPO objectives (DavIR Table 3): for a trained policy and its reference, the Pearson
(and Spearman) correlation between each loss type's per-pair objective and the response-length difference
(chosen minus rejected tokens), with a scatter plot per loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.config import DataConfig, SignalConfig
from siftlm.data import open_dataset, write_rejects
from siftlm.files import atomic_write
from siftlm.models.load import load_model
from siftlm.recipes.dpo import policy_reference_table
from siftlm.recipes.runtime import runtime_for
from siftlm.report import dpo_length as page
from siftlm.signals.prepare import prepare_pairs
from siftlm.stats import pearson, spearman
from siftlm.train.dpo_losses import LOSSES, default_beta, per_pair


def loss_beta(name: str, pairs: pd.DataFrame, beta: float = 0.1, davir_beta: float | None = None) -> float:
    """``beta`` for TRL's losses; for davir ``davir_beta`` or the training default."""
    if name != "davir":
        return beta
    return davir_beta if davir_beta is not None else default_beta(name, pairs["ref_chosen_logp"], pairs["ref_rejected_logp"])


def length_table(pairs: pd.DataFrame, beta: float = 0.1, losses: list[str] | None = None, *,
                 davir_beta: float | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One row per loss type: pearson and spearman against ``length_diff``, mean objective, beta, pairs used;
    and the per-pair objectives themselves."""
    x = pairs["length_diff"].to_numpy(dtype=np.float64)
    rows, values = [], {}
    for name in losses or list(LOSSES):
        b = loss_beta(name, pairs, beta, davir_beta)
        y = values[name] = per_pair(name, pairs, b).numpy()
        ok = np.isfinite(y)
        rows.append({"loss": name, "pearson": pearson(x, y), "spearman": spearman(x, y),
                     "mean_objective": float(y[ok].mean()) if ok.any() else np.nan, "beta": b,
                     "n_pairs": int(ok.sum())})
    return pd.DataFrame(rows), values


def analyze_dpo_length(data: str, adapter: str, model: str, out: str | Path, signals: SignalConfig, *,
                       beta: float = 0.1, davir_beta: float | None = None, src: DataConfig | None = None,
                       with_values: bool = False):
    """Write ``pairs.parquet``, ``dpo_length.json``, ``dpo_length.png`` and ``report.html`` into ``out``; returns
    the correlation table (and, ``with_values``, the per-pair objectives and the pair table too)."""
    lm = load_model(model, adapter=str(adapter), dtype=signals.dtype)
    prep = prepare_pairs(open_dataset(data, src or DataConfig()), lm.tokenizer, signals)
    write_rejects(prep.rejects, Path(out) / "rejects.jsonl")
    pairs = policy_reference_table(lm, prep, runtime_for(signals))
    table, values = length_table(pairs, beta, davir_beta=davir_beta)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "pairs.parquet") as tmp:
        pairs.to_parquet(tmp, index=False)
    with atomic_write(out / "dpo_length.json") as tmp:
        tmp.write_text(table.to_json(orient="records", indent=2))
    fig = page.scatter(pairs["length_diff"].to_numpy(), values, table)
    page.write(table, fig, out, title=f"DPO objectives vs length: {adapter} on {Path(data).name} ({len(pairs)} pairs)")
    return (table, values, pairs) if with_values else table

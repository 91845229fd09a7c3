"""Length dependence of DPO objectives (DavIR Table 3): for a trained policy and its reference, the Pearson
(and Spearman) correlation between each loss type's per-pair objective and the response-length difference
(chosen minus rejected tokens), with a scatter plot per loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from siftlm.dpo.losses import LOSSES, davir_default_beta, per_pair


def loss_beta(name: str, pairs: pd.DataFrame, beta: float = 0.1, davir_beta: float | None = None) -> float:
    """``beta`` for TRL's losses; for davir ``davir_beta`` or the training default (0.1 x median |log pi_ref|)."""
    if name != "davir":
        return beta
    return davir_beta if davir_beta is not None else davir_default_beta(pairs["ref_chosen_logp"], pairs["ref_rejected_logp"])


def length_table(pairs: pd.DataFrame, beta: float = 0.1, losses: list[str] | None = None, *,
                 davir_beta: float | None = None) -> pd.DataFrame:
    """One row per loss type: pearson and spearman against ``length_diff``, mean objective, beta, pairs used."""
    x = pairs["length_diff"].to_numpy(dtype=np.float64)
    rows = []
    for name in losses or list(LOSSES):
        b = loss_beta(name, pairs, beta, davir_beta)
        y = per_pair(name, pairs, b).numpy()
        ok = np.isfinite(y)
        constant = np.ptp(y[ok]) == 0 or np.ptp(x[ok]) == 0 if ok.any() else True
        rows.append({"loss": name, "pearson": np.nan if constant else stats.pearsonr(x[ok], y[ok])[0],
                     "spearman": np.nan if constant else stats.spearmanr(x[ok], y[ok])[0],
                     "mean_objective": float(y[ok].mean()) if ok.any() else np.nan, "beta": b,
                     "n_pairs": int(ok.sum())})
    return pd.DataFrame(rows)


def scatter(pairs: pd.DataFrame, table: pd.DataFrame, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = table["loss"].tolist()
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    x = pairs["length_diff"].to_numpy()
    for ax, (_, row) in zip(axes.flat, table.iterrows(), strict=False):
        ax.scatter(x, per_pair(row["loss"], pairs, row["beta"]).numpy(), s=6, alpha=0.5)
        ax.set_title(f"{row['loss']}  r={row['pearson']:+.2f}", fontsize=9)
        ax.set_xlabel("chosen - rejected tokens", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("per-pair objective", fontsize=8)
    fig.suptitle(f"DPO objective vs response-length difference ({len(pairs)} pairs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)

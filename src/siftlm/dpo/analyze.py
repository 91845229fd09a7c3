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


def write_html(table: pd.DataFrame, png: str | Path, path: str | Path, *, title: str) -> Path:
    """One self-contained page: the correlation table (DavIR Table 3 layout) and the scatter grid."""
    import base64
    import html

    from siftlm.data.io import atomic_write

    rows = "".join(
        f"<tr><td>{html.escape(r['loss'])}</td><td>{r['pearson']:+.3f}</td><td>{r['spearman']:+.3f}</td>"
        f"<td>{r['mean_objective']:.4g}</td><td>{r['beta']:.4g}</td><td>{r['n_pairs']}</td></tr>"
        for _, r in table.iterrows())
    img = base64.b64encode(Path(png).read_bytes()).decode()
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}td,th{{padding:2px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Correlation of each DPO loss type's per-pair objective with the response-length difference (chosen minus
rejected tokens), as in DavIR Table 3. Closer to 0 means the objective depends less on length.</p>
<table><tr><th>loss</th><th>Pearson</th><th>Spearman</th><th>mean objective</th><th>beta</th><th>pairs</th></tr>
{rows}</table><p><img src="data:image/png;base64,{img}" style="max-width:100%"></p></body></html>"""
    with atomic_write(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)

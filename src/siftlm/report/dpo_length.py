"""The DPO length analysis (DavIR Table 3) as a page: the correlation table and a scatter per loss type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.files import atomic_write
from siftlm.report.html import figure, png, pyplot, write_page
from siftlm.report.html import table as html_table


def scatter(length_diff: np.ndarray, objectives: dict[str, np.ndarray], table: pd.DataFrame):
    """One scatter per loss type of the per-pair objective against chosen - rejected tokens; returns the figure."""
    plt = pyplot()
    names = list(objectives)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    r = table.set_index("loss")["pearson"]
    for ax, name in zip(axes.flat, names, strict=False):
        ax.scatter(length_diff, objectives[name], s=6, alpha=0.5)
        ax.set_title(f"{name}  r={r[name]:+.2f}", fontsize=9)
        ax.set_xlabel("chosen - rejected tokens", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("per-pair objective", fontsize=8)
    fig.suptitle(f"DPO objective vs response-length difference ({len(length_diff)} pairs)", fontsize=10)
    fig.tight_layout()
    return fig


def write(table: pd.DataFrame, fig, out: Path, *, title: str) -> dict[str, Path]:
    """``dpo_length.png`` and ``report.html`` (the table in DavIR Table 3 layout and the scatter grid)."""
    with atomic_write(out / "dpo_length.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    rows = [[r["loss"], f"{r['pearson']:+.3f}", f"{r['spearman']:+.3f}", f"{r['mean_objective']:.4g}", f"{r['beta']:.4g}",
             r["n_pairs"]] for _, r in table.iterrows()]
    body = ("<p>Correlation of each DPO loss type's per-pair objective with the response-length difference (chosen "
            "minus rejected tokens), as in DavIR Table 3. Closer to 0 means the objective depends less on length.</p>"
            + html_table(["loss", "Pearson", "Spearman", "mean objective", "beta", "pairs"], rows) + figure(png(fig)))
    return {"png": out / "dpo_length.png", "html": write_page(out / "report.html", title, body)}

"""A one-file HTML report of a scored selection: counts, length dependence and the plots a person looks at.

Plots (matplotlib, embedded as PNG): the selection score against response length with kept examples
marked (DavIR appendix B, Fig. 6), RHO-LM and DavIR against total tokens side by side (DavIR Table 2),
the perplexity trajectory P_0..P_n, and the score distribution.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.report.html import figure, png, pyplot, write_page
from siftlm.report.html import table as html_table
from siftlm.signals.table import trajectory_columns


def _plots(table: pd.DataFrame, by: str) -> list[tuple[str, str]]:
    plt = pyplot()
    plots = []
    kept = table["selected"].to_numpy(bool) if "selected" in table else np.zeros(len(table), bool)
    total = (table["n_prompt"] + table["n_response"]).to_numpy()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(table["n_response"][~kept], table[by][~kept], s=10, alpha=0.5, label="not kept")
    ax.scatter(table["n_response"][kept], table[by][kept], s=18, color="C3", label="kept")
    ax.set(xlabel="response tokens", ylabel=by, xscale="log", title=f"{by} vs response length")
    ax.legend()
    plots.append((f"{by} against response length (kept in red)", png(fig)))

    pairs = [c for c in ("rho", "davir") if c in table]
    if pairs:
        fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 3.6), squeeze=False)
        for ax, c in zip(axes[0], pairs, strict=True):
            ax.scatter(total, table[c], s=8, alpha=0.6)
            ax.set(xlabel="total tokens", ylabel=c, xscale="log", title=f"{c} vs length")
        plots.append(("RHO-LM and DavIR against length (DavIR's normalisation targets this)", png(fig)))

    traj = trajectory_columns(table, "ppl")
    if len(traj) >= 2:
        fig, ax = plt.subplots(figsize=(6, 4))
        p = table[traj].to_numpy()
        x = np.arange(len(traj))
        ax.plot(x, p[~kept].T, color="C0", alpha=0.15, lw=0.8)
        if kept.any():
            ax.plot(x, p[kept].T, color="C3", alpha=0.7, lw=1.2)
        ax.plot(x, np.median(p, axis=0), color="k", lw=2, label="median")
        ax.set(xlabel="epoch", ylabel="response perplexity", yscale="log", xticks=x,
               title="fine-tuning trajectory P_0..P_n (kept in red)")
        ax.legend()
        plots.append(("Perplexity trajectory (learning percentage uses its first step)", png(fig)))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    v = table[by].to_numpy(float)
    v = v[np.isfinite(v)]
    ax.hist(v, bins=40)
    if kept.any():
        cut = table.loc[kept, by].min() if table.loc[kept, by].min() > np.median(v) else table.loc[kept, by].max()
        ax.axvline(cut, color="C3", ls="--", label="selection threshold")
        ax.legend()
    ax.set(xlabel=by, ylabel="examples", title=f"distribution of {by}")
    plots.append((f"Distribution of {by}", png(fig)))
    return plots


def write_report(table: pd.DataFrame, summary: dict, path: str | Path, *, by: str, show: int = 10) -> Path:
    """Write ``report.html`` (self-contained) for a scored table with ``selected``/``rank`` columns."""
    esc = html.escape
    counts = html_table(["count", "n"], [[k, v] for k, v in summary.get("counts", {}).items()])
    corr = html_table(["signal ~ length", "Pearson", "Spearman"],
                      [[k, f"{v['pearson']:+.3f}", f"{v['spearman']:+.3f}"]
                       for k, v in summary.get("length_correlations", {}).items()])
    times = html_table(["step", "time"], [[k, f"{v:.1f} s"] for k, v in summary.get("timings_s", {}).items()])
    figs = "".join(figure(b64, cap) for cap, b64 in _plots(table, by))
    top = table[table["selected"]].sort_values("rank").head(show) if "selected" in table else table.head(0)
    top_rows = html_table(["rank", "id", by, "response tokens"],
                          [[r["rank"], r["id"], f"{r[by]:.4g}", r["n_response"]] for _, r in top.iterrows()])
    body = f"""<p>data <code>{esc(str(summary.get("data", "")))}</code>, model <code>{esc(str(summary.get("model", "")))}</code>,
selected by <b>{esc(by)}</b> ({esc(json.dumps(summary.get("selection", {})))})</p>
<h2>Counts</h2>{counts}
<h2>Length dependence</h2>{corr}
<h2>Plots</h2>{figs}
<h2>Top kept examples</h2>{top_rows}
<h2>Timings</h2>{times}"""
    return write_page(path, "siftlm selection report", body)

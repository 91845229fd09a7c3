"""A one-file HTML report of a scored selection: counts, length dependence and the plots a person looks at.

Plots (matplotlib, embedded as PNG): the selection score against response length with kept examples
marked (DavIR appendix B, Fig. 6), RHO-LM and DavIR against total tokens side by side (DavIR Table 2),
the perplexity trajectory P_0..P_n, and the score distribution.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.data.io import atomic_write


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(table: pd.DataFrame, by: str) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    kept = table["selected"].to_numpy(bool) if "selected" in table else np.zeros(len(table), bool)
    total = (table["n_prompt"] + table["n_response"]).to_numpy()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(table["n_response"][~kept], table[by][~kept], s=10, alpha=0.5, label="not kept")
    ax.scatter(table["n_response"][kept], table[by][kept], s=18, color="C3", label="kept")
    ax.set(xlabel="response tokens", ylabel=by, xscale="log", title=f"{by} vs response length")
    ax.legend()
    plots.append((f"{by} against response length (kept in red)", _png(fig)))
    plt.close(fig)

    pairs = [c for c in ("rho", "davir") if c in table]
    if pairs:
        fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 3.6), squeeze=False)
        for ax, c in zip(axes[0], pairs, strict=True):
            ax.scatter(total, table[c], s=8, alpha=0.6)
            ax.set(xlabel="total tokens", ylabel=c, xscale="log", title=f"{c} vs length")
        plots.append(("RHO-LM and DavIR against length (DavIR's normalisation targets this)", _png(fig)))
        plt.close(fig)

    traj = sorted((c for c in table.columns if c.startswith("ppl_") and c[4:].isdigit()), key=lambda c: int(c[4:]))
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
        plots.append(("Perplexity trajectory (learning percentage uses its first step)", _png(fig)))
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    v = table[by].to_numpy(float)
    v = v[np.isfinite(v)]
    ax.hist(v, bins=40)
    if kept.any():
        cut = table.loc[kept, by].min() if table.loc[kept, by].min() > np.median(v) else table.loc[kept, by].max()
        ax.axvline(cut, color="C3", ls="--", label="selection threshold")
        ax.legend()
    ax.set(xlabel=by, ylabel="examples", title=f"distribution of {by}")
    plots.append((f"Distribution of {by}", _png(fig)))
    plt.close(fig)
    return plots


def write_report(table: pd.DataFrame, summary: dict, path: str | Path, *, by: str, show: int = 10) -> Path:
    """Write ``report.html`` (self-contained) for a scored table with ``selected``/``rank`` columns."""
    esc = html.escape
    counts = summary.get("counts", {})
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in counts.items())
    corr = summary.get("length_correlations", {})
    corr_rows = "".join(f"<tr><td>{esc(k)}</td><td>{v['pearson']:+.3f}</td><td>{v['spearman']:+.3f}</td></tr>"
                        for k, v in corr.items())
    times = "".join(f"<tr><td>{esc(k)}</td><td>{v:.1f} s</td></tr>" for k, v in summary.get("timings_s", {}).items())
    figs = "".join(f"<figure><img src='data:image/png;base64,{b64}'><figcaption>{esc(cap)}</figcaption></figure>"
                   for cap, b64 in _plots(table, by))
    top = table[table["selected"]].sort_values("rank").head(show) if "selected" in table else table.head(0)
    top_rows = "".join(f"<tr><td>{r['rank']}</td><td>{esc(str(r['id']))}</td><td>{r[by]:.4g}</td>"
                       f"<td>{r['n_response']}</td></tr>" for _, r in top.iterrows())
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>siftlm report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px}}figure{{display:inline-block;margin:1em}}</style></head><body>
<h1>siftlm selection report</h1>
<p>data <code>{esc(str(summary.get("data", "")))}</code>, model <code>{esc(str(summary.get("model", "")))}</code>,
selected by <b>{esc(by)}</b> ({esc(json.dumps(summary.get("selection", {})))})</p>
<h2>Counts</h2><table>{rows}</table>
<h2>Length dependence</h2><table><tr><th>signal ~ length</th><th>Pearson</th><th>Spearman</th></tr>{corr_rows}</table>
<h2>Plots</h2>{figs}
<h2>Top kept examples</h2><table><tr><th>rank</th><th>id</th><th>{esc(by)}</th><th>response tokens</th></tr>{top_rows}</table>
<h2>Timings</h2><table>{times}</table>
</body></html>"""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(doc)
    return path

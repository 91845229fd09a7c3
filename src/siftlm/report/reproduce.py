"""The reproduction report: each measured claim beside the paper's number, with its CI and a verdict."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np

from siftlm.report.html import figure, png, pyplot, table, write_page

SOURCES = {"davir-table1": "DavIR Table 1: loss and entropy against length",
           "davir-table2": "DavIR Table 2: RHO-LM against DavIR, length dependence",
           "davir-table3": "DavIR Table 3: DPO objectives against response-length difference",
           "lp-table3": "Learning percentage Table 3: LP(1) against LP_app(1)",
           "dpp-eq3": "DPP paper eq. 3: log-determinant distance of selections",
           "dpp-fig2": "DPP paper Figure 2: LDD of a training set (LoRA gradients) against the trained model's loss",
           "dpp-fig4": "DPP paper Figure 4: LDD in other representations (sentence and LM embeddings)"}


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"[+-]?\d+\.\d+", text.split(":")[0] if ":" in text else text)]


def _plot(rows) -> str:
    """Ours (dot, CI bar) and the paper's values (crosses) per row."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1))
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows, strict=True):
        if np.isfinite(r.ours):
            ax.errorbar(r.ours, yi, xerr=[[max(r.ours - r.low, 0)], [max(r.high - r.ours, 0)]], fmt="o", color="C0")
        for p in _numbers(r.paper):
            ax.plot(p, yi, "x", color="C3")
    ax.set_yticks(y, [r.quantity for r in rows], fontsize=8)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("value (o = ours with CI, x = paper)")
    return png(fig)


def ldd_figure(table) -> str:
    """LDD of every fine-tuned cell against its held-out loss per token (and its refusal rate on each set where the
    greedy answers were measured), one panel per representation, one colour per (grid, budget)."""
    plt = pyplot()
    reps = [c for c in ("ldd:grads", "ldd:lm-embed", "ldd:embed") if c in table]
    metrics = [m for m in table.columns if m == "heldout:loss_per_token"
               or (m.endswith(":refusal") and table[m].notna().any())]
    if not reps or not metrics:
        return ""
    fig, axes = plt.subplots(len(metrics), len(reps), figsize=(4.2 * len(reps), 3.8 * len(metrics)), squeeze=False)
    groups = table.groupby(["grid", "budget", "unit"], dropna=False)
    for row, metric in zip(axes, metrics, strict=True):
        for ax, col in zip(row, reps, strict=True):
            for k, ((grid, budget, unit), part) in enumerate(groups):
                label = f"{grid} {'all' if budget != budget else f'{budget:g}'}{' tok' if unit == 'tokens' else ''}"
                ax.scatter(part[col], part[metric], s=14, color=f"C{k % 10}", label=label, alpha=0.8)
            ax.set(xlabel=f"{col.removeprefix('ldd:')} LDD (lower = more diverse)",
                   ylabel={"heldout:loss_per_token": "held-out loss per token"}.get(metric, metric))
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return figure(png(fig), "Each dot a fine-tuned cell. The paper's claim: more diverse (lower LDD) trains better "
                           "(lower loss, fewer refusals), a rising cloud.")


def write(rows, path: str | Path, *, title: str, settings: dict, timings: dict, extra: str = "") -> Path:
    body = ("<p>Each row: the quantity, the paper's value(s), ours with a 95% bootstrap CI over the examples (LDD "
            "rows: the range over reference seeds), and whether they agree. Paper settings differ from ours in model "
            "size and data: read agreement as direction and rough size, not equality.</p>")
    for name, caption in SOURCES.items():
        part = [r for r in rows if r.table == name]
        if not part:
            continue
        body += f"<h2>{html.escape(caption)}</h2>" + table(
            ["quantity", "paper", "ours", "95% CI", "verdict", "n"],
            [[r.quantity, r.paper, f"{r.ours:+.3f}", f"[{r.low:+.3f}, {r.high:+.3f}]", r.verdict, r.n] for r in part])
        body += figure(_plot(part))
    body += extra
    body += "<h2>Settings and timings</h2>" + table(["step", "seconds"], [[k, v] for k, v in timings.items()])
    body += f"<pre>{html.escape(json.dumps(settings, indent=2, default=str))}</pre>"
    return write_page(path, title, body)

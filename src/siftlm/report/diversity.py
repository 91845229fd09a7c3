"""The log-determinant distance curves of several feature sets in one plot (``siftlm diversity``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siftlm.files import atomic_write
from siftlm.report.html import pyplot


def plot_ldd(curves: list[tuple[str, np.ndarray, bool]], path: str | Path) -> Path:
    """One line per (label, curve over greedy steps, stopped early because the kernel became singular), written
    as a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, curve, partial) in enumerate(curves):
        style = ["-", "--", ":", "-."][i % 4]          # identical curves must not hide each other
        ax.plot(np.arange(1, len(curve) + 1), curve, style, lw=1.5, label=label)
        if partial:
            ax.plot(len(curve), curve[-1], "x", color=ax.lines[-1].get_color(), ms=9)
    ax.set(xlabel="greedy step n", ylabel="(1/n) log det R_n / det L_n",
           title="log-determinant distance (lower = more diverse; x = kernel singular, LDD = inf)")
    ax.legend(fontsize=8)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return Path(path)

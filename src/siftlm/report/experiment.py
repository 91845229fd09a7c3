"""The experiment's results as a Markdown table and an HTML page with a loss-vs-budget plot per method."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siftlm.report.html import figure, png, pyplot, table, write_page


def _fmt_budget(b) -> str:
    return "all" if b is None else (f"{b:g}" if isinstance(b, float) and b <= 1 else str(b))


def _grid_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    budgets = sorted({g["budget"] for g in summary["grid"] if g["budget"] is not None}, key=float)
    methods = list(dict.fromkeys(g["method"] for g in summary["grid"]))
    cell = {(g["method"], g["budget"]): g for g in summary["grid"]}
    rows = []
    for m in methods:
        row = [m]
        for b in budgets:
            g = cell.get((m, b)) or cell.get((m, None))
            row.append(f"{g['loss']:.4f} [{g['low']:.4f}, {g['high']:.4f}]" if g else "")
        rows.append(row)
    return ["method"] + [f"budget {_fmt_budget(b)}" for b in budgets], rows


def markdown(summary: dict, cfg) -> str:
    header, rows = _grid_rows(summary)
    base = summary["base_model_loss"]
    lines = [f"Held-out loss of {cfg.eval} reference answers ({summary['eval_items']} items; lower is better), mean "
             f"over {len(cfg.seeds)} seed(s) with a 95% bootstrap CI over evaluation items. Base model without "
             f"fine-tuning: {base['mean']:.4f} [{base['low']:.4f}, {base['high']:.4f}].", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Paired difference from random at the same budget (method - random; negative = lower loss):", "",
              "| method | budget | difference [95% CI] | P(diff <= 0) |", "|---|---|---|---|"]
    lines += [f"| {p['method']} | {_fmt_budget(p['budget'])} | {p['diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}] | "
              f"{p['p_le_0']:.3f} |" for p in summary["paired_vs_random"]]
    o = summary.get("overhead")
    if o:
        lines += ["", f"Wall time {o['wall_s'] / 60:.1f} min: selection, fine-tuning and evaluation "
                      f"{o['cells_select_finetune_evaluate_s'] / 60:.1f} min; everything else {o['other_s']:.0f} s "
                      f"({100 * o['other_share']:.1f} %)."]
    return "\n".join(lines) + "\n"


def _plot(summary: dict) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    budgets = sorted({g["budget"] for g in summary["grid"] if g["budget"] is not None}, key=float)
    x = np.arange(len(budgets))
    for i, m in enumerate(dict.fromkeys(g["method"] for g in summary["grid"])):
        gs = {g["budget"]: g for g in summary["grid"] if g["method"] == m}
        if None in gs:                                        # full: one value for every budget
            g = gs[None]
            ax.axhspan(g["low"], g["high"], color=f"C{i}", alpha=0.15)
            ax.axhline(g["loss"], color=f"C{i}", ls="--", label=m)
            continue
        y = [gs[b]["loss"] if b in gs else np.nan for b in budgets]
        lo = [gs[b]["low"] if b in gs else np.nan for b in budgets]
        hi = [gs[b]["high"] if b in gs else np.nan for b in budgets]
        ax.plot(x, y, "o-", color=f"C{i}", label=m)
        ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.15)
    base = summary["base_model_loss"]["mean"]
    ax.axhline(base, color="k", ls=":", lw=1, label="base model")
    ax.set_xticks(x, [_fmt_budget(b) for b in budgets])
    ax.set(xlabel="budget", ylabel="held-out loss (lower is better)", title="held-out loss by method and budget (95% CI)")
    ax.legend(fontsize=8, ncol=2)
    return png(fig)


def write(summary: dict, cfg, path: str | Path) -> Path:
    header, rows = _grid_rows(summary)
    paired = table(["method", "budget", "difference", "95% CI", "P(diff <= 0)"],
                   [[p["method"], _fmt_budget(p["budget"]), f"{p['diff']:+.4f}", f"[{p['low']:+.4f}, {p['high']:+.4f}]",
                     f"{p['p_le_0']:.3f}"] for p in summary["paired_vs_random"]])
    cells = table(["method", "budget", "seeds", "selected", "loss", "seed sd", "minutes"],
                  [[g["method"], _fmt_budget(g["budget"]), g["seeds"], g["selected"], f"{g['loss']:.4f}",
                    f"{g['seed_sd']:.4f}", f"{g['minutes']:.1f}"] for g in summary["grid"]])
    body = (f"<p>{markdown(summary, cfg).splitlines()[0]}</p>" + table(header, rows) + figure(_plot(summary))
            + "<h2>Against random at the same budget</h2>" + paired + "<h2>Cells</h2>" + cells)
    o = summary.get("overhead")
    if o:
        body += f"<p>{markdown(summary, cfg).strip().splitlines()[-1]}</p>"
    return write_page(path, f"siftlm experiment: {cfg.model}", body)

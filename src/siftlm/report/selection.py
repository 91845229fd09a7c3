"""A one-file HTML report of a scored selection: counts, length dependence, the plots a person looks at, and the
text of the examples at both ends of the ranking.

Plots (matplotlib, embedded as PNG): the selection score against response length with the selected examples
marked (DavIR appendix B, Fig. 6), RHO-LM and DavIR against total tokens side by side (DavIR Table 2), the
perplexity trajectory P_0..P_n, and the score distribution with the selection threshold. Words: "kept" counts the
valid examples in use, "selected" the ones the selection chose.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.report import evidence
from siftlm.report.html import figure, png, pyplot, write_page
from siftlm.report.html import table as html_table
from siftlm.signals.table import trajectory_columns
from siftlm.stats import spearman

LENGTH_BIAS = 0.4       # |Spearman(score, response tokens)| above this is called out in a sentence


def _log_axis(axis) -> None:
    """Plain numbers on a log axis, major ticks only (minor labels overlap on short ranges)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _plots(table: pd.DataFrame, by: str, direction: str) -> list[tuple[str, str]]:
    plt = pyplot()
    plots = []
    sel = table["selected"].to_numpy(bool) if "selected" in table else np.zeros(len(table), bool)
    total = (table["n_prompt"] + table["n_response"]).to_numpy()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(table["n_response"][~sel], table[by][~sel], s=10, alpha=0.5, label="not selected")
    if sel.any():
        ax.scatter(table["n_response"][sel], table[by][sel], s=18, color="C3", label="selected")
    ax.set(xlabel="response tokens", ylabel=by, xscale="log", title=f"{by} vs response length")
    _log_axis(ax.xaxis)
    ax.legend()
    plots.append((f"{by} against response length (selected in red)", png(fig)))

    pairs = [c for c in ("rho", "davir") if c in table]
    if pairs:
        fig, axes = plt.subplots(1, len(pairs), figsize=(6, 4), squeeze=False)
        for ax, c in zip(axes[0], pairs, strict=True):
            ax.scatter(total, table[c], s=8, alpha=0.6)
            ax.set(xlabel="total tokens", ylabel=c, xscale="log", title=f"{c} vs length")
            _log_axis(ax.xaxis)
        fig.tight_layout()
        plots.append(("RHO-LM and DavIR against length (DavIR's normalisation targets this)", png(fig)))

    traj = trajectory_columns(table, "ppl")
    if len(traj) >= 2:
        fig, ax = plt.subplots(figsize=(6, 4))
        p = table[traj].to_numpy()
        x = np.arange(len(traj))
        ax.plot(x, p[~sel].T, color="C0", alpha=0.15, lw=0.8)
        if sel.any():
            ax.plot(x, p[sel].T, color="C3", alpha=0.7, lw=1.2)
        ax.plot(x, np.median(p, axis=0), color="k", lw=2, label="median")
        ax.set(xlabel="epoch", ylabel="response perplexity", yscale="log", xticks=x,
               title="fine-tuning trajectory P_0..P_n (selected in red)")
        _log_axis(ax.yaxis)
        ax.legend()
        plots.append(("Perplexity trajectory (learning percentage uses its first step)", png(fig)))

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    v = table[by].to_numpy(float)
    ax.hist(v[np.isfinite(v)], bins=40)
    if sel.any():      # the last selected value: the lowest kept for "high" scores, the highest for "low" ones
        chosen = table.loc[sel, by]
        ax.axvline(chosen.min() if direction == "high" else chosen.max(), color="C3", ls="--",
                   label=f"selection threshold ({direction}est kept)")
        ax.legend()
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=by, ylabel="examples", title=f"distribution of {by}")
    plots.append((f"Distribution of {by}", png(fig)))
    return plots


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _texts(examples) -> dict[str, tuple[str, str]]:
    """id -> (the last prompt turn, the response), for the tables of examples."""
    out = {}
    for e in examples or []:
        msgs = list(e.messages) + ([{"role": "assistant", "content": e.chosen}] if e.chosen is not None else [])
        last = max((i for i, m in enumerate(msgs) if m["role"] != "assistant"), default=-1)
        prompt = msgs[last]["content"] if last >= 0 else ""
        out[e.id] = (prompt, "\n".join(m["content"] for m in msgs[last + 1:]))
    return out


def _rows(part: pd.DataFrame, by: str, texts: dict, rank_col: str) -> list[list]:
    return [[r[rank_col], r["id"], f"{r[by]:.4g}", r["n_response"], _short(texts.get(r["id"], ("", ""))[0], 160),
             _short(texts.get(r["id"], ("", ""))[1], 240)] for _, r in part.iterrows()]


def _length_sentence(table: pd.DataFrame, by: str) -> str:
    rho = spearman(table[by], table["n_response"])
    if not np.isfinite(rho) or abs(rho) <= LENGTH_BIAS:
        return ""
    sel = table["selected"].to_numpy(bool) if "selected" in table else np.zeros(len(table), bool)
    where = ""
    if sel.any():
        where = (f" The selected examples' responses have a median of {np.median(table.loc[sel, 'n_response']):.0f} "
                 f"tokens, against {np.median(table['n_response']):.0f} over all.")
    return (f"<p><b>This selection is strongly length-biased:</b> Spearman({html.escape(by)}, response tokens) = "
            f"{rho:+.2f}.{where} A score that tracks length mostly selects long (or short) responses.</p>")


DETECTOR_WORDS = {"refusal": "refusal-like answers", "wrong_language": "answers not in the expected language",
                  "repetition": "looping answers", "empty": "empty answers", "echo": "answers echoing the prompt"}


def detector_sentence(detectors: dict | None) -> str:
    """'kept 0 of 23 refusal-like answers, 2 of 15 answers not in the expected language, ...' (no labels: what the
    detectors find in the data), or '' when they found nothing."""
    parts = [f"{v['kept']} of {v['kept'] + v['dropped']} {DETECTOR_WORDS.get(k, k)}"
             for k, v in (detectors or {}).items() if v["kept"] + v["dropped"]]
    return f"kept {', '.join(parts)}" if parts else ""


def detector_section(detectors: dict | None) -> str:
    if not detectors:
        return ""
    text = detector_sentence(detectors)
    rows = [[DETECTOR_WORDS.get(k, k), v["kept"], v["dropped"]] for k, v in detectors.items()]
    return ("<h2>What the behaviour detectors find</h2><p>Refusals and boilerplate, answers in another language, loops, "
            "empty answers and prompt echoes found by siftlm's detectors (phrase lists, a language identifier, repeated "
            "n-grams; no labels) among the kept and the dropped rows: "
            f"{html.escape(text) if text else 'none found'}.</p>" + html_table(["detector", "kept", "dropped"], rows))


def _evidence(summary: dict, by: str) -> str:
    e = summary.get("evidence") or {}
    return evidence.target_section(e["method"]) if e.get("kind") == "targeted" else evidence.section(by)


def write_report(table: pd.DataFrame, summary: dict, path: str | Path, *, by: str, show: int = 10,
                 examples=None) -> Path:
    """Write ``report.html`` (self-contained) for a scored table with ``selected``/``rank`` columns; ``examples``
    (the prepared examples) let the tables show each example's text."""
    esc = html.escape
    direction = (summary.get("selection") or {}).get("direction", "high")
    reasons = summary.get("rejects_by_reason", {})
    counts = html_table(["count", "n"], [[k.replace("_", " "), v] for k, v in summary.get("counts", {}).items()]
                        + [[f"rejected: {k}", n] for k, n in reasons.items()])
    corr = html_table(["signal ~ length", "Pearson", "Spearman"],
                      [[k, f"{v['pearson']:+.3f}", f"{v['spearman']:+.3f}"]
                       for k, v in summary.get("length_correlations", {}).items()])
    cached = set(summary.get("cached", []))
    raised = (summary.get("memory") or {}).get("raised_by_step_gb", {})
    times = html_table(["step", "time", "raised the peak memory by"],
                       [[k, "cached" if k in cached else f"{v:.1f} s", f"{raised[k]:.2f} GB" if k in raised else ""]
                        for k, v in summary.get("timings_s", {}).items()])
    figs = "".join(figure(b64, cap) for cap, b64 in _plots(table, by, direction))
    texts = _texts(examples)
    header = ["rank", "id", by, "response tokens", "prompt", "response"]
    ranked = table.assign(position=table[by].rank(ascending=direction == "low", method="first"))
    if "selected" in table and table["selected"].any():
        top = table[table["selected"]].sort_values("rank").head(show)
        top_html = "<h2>Top selected examples</h2>" + html_table(header, _rows(top, by, texts, "rank"))
    else:
        top_html = "<h2>Top of the ranking</h2>" + html_table(header, _rows(
            ranked.sort_values("position").head(show), by, texts, "position"))
    bottom = ranked[np.isfinite(ranked[by])].sort_values("position").tail(show).iloc[::-1]
    bottom_html = ("<h2>Bottom of the ranking (dropped first)</h2>"
                   + html_table(["position"] + header[1:], _rows(bottom.assign(position=bottom["position"].astype(int)),
                                                                by, texts, "position")))
    selection = summary.get("selection")
    body = f"""<p>data <code>{esc(str(summary.get("data", "")))}</code>, model <code>{esc(str(summary.get("model", "")))}</code>,
{"selected by <b>" + esc(by) + "</b> (" + esc(json.dumps(selection)) + ")" if selection else "scored, nothing selected"}</p>
{_length_sentence(table, by)}
{_evidence(summary, by) if selection else ""}
{detector_section(summary.get("detectors"))}
<h2>Counts</h2><p>read = kept + rejected + skipped + unused by --limit; "selected" is what the selection chose.</p>{counts}
<h2>Length dependence</h2>{corr}
<h2>Plots</h2><div class="figs">{figs}</div>
{top_html}{bottom_html}
<h2>Timings</h2>{times}"""
    return write_page(path, "siftlm selection report", body)

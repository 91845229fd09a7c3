"""Shared pieces of siftlm's HTML reports: figures as embedded PNG, escaped tables, one page template."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from siftlm.files import atomic_write

STYLE = ("body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
         "td.n{text-align:right;white-space:nowrap}tr:nth-child(even){background:#f6f6f6}"
         "figure{display:inline-block;margin:1em;vertical-align:top}figcaption{max-width:560px}"
         ".figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:0.5em}"
         ".figs figure{margin:0.5em}.figs img{width:100%}td{vertical-align:top}")


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig, *, close: bool = True) -> str:
    """A matplotlib figure as base64 PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    if close:
        pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def figure(b64: str, caption: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img src='data:image/png;base64,{b64}' style='max-width:100%'>{cap}</figure>"


def _cell(value) -> str:
    """A cell, right-aligned when it is a number (or a number with a unit or interval), left-aligned text otherwise."""
    text = str(value)
    numeric = bool(re.fullmatch(r"[-+]?[\d.,e+-]+( s| MB|%)?|\[[-+\d., e]+\]|[-+\d.e]+ \[[-+\d., e]+\]", text))
    return f"<td class='n'>{html.escape(text)}</td>" if numeric else f"<td>{html.escape(text)}</td>"


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; every cell is escaped (str() of the value)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def write_page(path: str | Path, title: str, body: str) -> Path:
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(page(title, body), encoding="utf-8")
    return path

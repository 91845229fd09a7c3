"""Mixing several scored sources, each under its own method and budget, into one selection.

The DavIR paper's Alpaca + GSM8K mix is two sources with their own budgets. Each source's selection is written
to ``OUT/sources/<name>/``; the combined ``selection.parquet`` and ``selected.jsonl`` carry the source of
every row, and ``mix.json`` the per-source counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from siftlm.backends import Executor
from siftlm.config import SelectConfig, from_dict
from siftlm.data import write_jsonl
from siftlm.data.read import content_id
from siftlm.errors import DataError
from siftlm.files import atomic_write, read_yaml, relative
from siftlm.select.run import run_selection


def safe_name(name, where: str) -> str:
    """A source name used as a folder name: one plain path component (no separators, not '.', '..' or hidden)."""
    if not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".") or \
            any(c in name for c in "/\\\0") or Path(name).is_absolute():
        raise DataError(f"{where}: name {name!r} must be a plain file name (letters, digits, '-', '_'; no '/', "
                         "'..' or leading '.')")
    return name


def inside(folder: Path, path: Path) -> Path:
    """``path`` if it resolves under ``folder``, else a ValueError (nothing is written outside the output folder)."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise DataError(f"{path}: outside the output folder {folder}")
    return path


def load_mix(path: str | Path) -> tuple[list[SelectConfig], dict]:
    """A mix file (YAML): ``{sources: [{name, scores, data, method, budget, ...}, ...], out: folder}``. Every path
    in it (each source's scores, data and features, and ``out``, default ``siftlm-mix``) is relative to the file's
    folder. Source names become folder names, so each must be a plain file name."""
    path = Path(path)
    spec = read_yaml(path, what="mix file")
    sources = spec.get("sources")
    if not isinstance(sources, list) or not sources:
        raise DataError(f"{path}: needs a non-empty 'sources' list")
    cfgs = []
    for i, s in enumerate(sources):
        where = f"{path}: sources[{i}]"
        if not isinstance(s, dict):
            raise DataError(f"{where}: expected a mapping of select options")
        for key in ("scores", "data"):
            if key not in s:
                raise DataError(f"{where} needs '{key}'")
        cfg = from_dict(SelectConfig, s, where=where)
        cfg = replace(cfg, **{k: relative(path, v) for k in ("scores", "data", "features") if (v := getattr(cfg, k))})
        cfgs.append(replace(cfg, name=safe_name(cfg.name or Path(s["data"]).stem, where)))
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: source names must be unique; got {names}")
    extra = {k: v for k, v in spec.items() if k != "sources"}
    extra["out"] = str(path.parent / (extra.get("out") or "siftlm-mix"))
    return cfgs, extra


def mix(sources: list[SelectConfig], out: str | Path, *,
        executors: Callable[[SelectConfig], Executor] | None = None) -> dict:
    """Run every source's selection and write the combined selection; returns the summary (also mix.json).

    An example selected by two sources (same messages and responses, whatever its ids) is kept once, under the
    first source, and counted. ``selected.jsonl`` holds the original records when every source has the same
    format, else each example in the messages format (``{"messages": [...]}``, plus chosen/rejected for pairs).
    ``executors(source)``: where each source's selection runs its independent pieces (the CLI builds them from
    each source's ``backend``); default this process.
    """
    out = Path(out)
    parts, rows, seen, summary = [], [], set(), {"sources": {}, "duplicates_across_sources": 0}
    for cfg in sources:
        res = run_selection(cfg, inside(out, out / "sources" / safe_name(cfg.name, "mix")),
                            executor=executors(cfg) if executors else None)
        sel = res.selection.assign(source=cfg.name, method=cfg.method)
        content = [content_id(e.messages, e.chosen, e.rejected) for e in res.examples]   # own ids may repeat
        keep = pd.Series([c not in seen for c in content], index=sel.index)
        summary["duplicates_across_sources"] += int((~keep).sum())
        seen.update(content)
        parts.append(sel[keep])
        rows += [e for e, k in zip(res.examples, keep, strict=True) if k]
        summary["sources"][cfg.name] = {**res.counts, "method": cfg.method, "budget": cfg.budget,
                                        "kept_in_mix": int(keep.sum()), "format": res.format,
                                        **({"note": res.note} if res.note else {})}
    combined = pd.concat(parts, ignore_index=True)
    combined.insert(0, "mix_rank", range(1, len(combined) + 1))
    with atomic_write(out / "selection.parquet") as tmp:
        combined.to_parquet(tmp, index=False)
    if len({s["format"] for s in summary["sources"].values()}) == 1:
        write_jsonl((e.raw for e in rows), out / "selected.jsonl")
    else:
        write_jsonl(({"messages": e.messages, **({"chosen": e.chosen, "rejected": e.rejected} if e.chosen is not None
                                                 else {})} for e in rows), out / "selected.jsonl")
    summary["selected"] = len(combined)
    summary["config"] = [asdict(c) for c in sources]
    with atomic_write(out / "mix.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary

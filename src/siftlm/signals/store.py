"""Keyed, sharded, resumable signal store.

A pass is identified by (dataset fingerprint, model fingerprint, pass name, pass settings); its folder
``<root>/<pass>-<key>`` holds ``meta.json``, one Parquet file per shard of columns keyed by example id, and a
``.done`` marker per shard. Shards are contiguous slices of the example list sized by work (about the same number
of tokens each, so a shard is roughly a minute of compute whatever the lengths), so a rerun computes only the
shards without a marker; a changed input or setting gives a new key, never a stale read. Every file is written
under a temporary name and renamed.

Several processes may run the same pass on the same store: a shard is taken with a lock file holding the owner's
host and pid, others skip it and come back for its result; a lock whose process has died is taken over. The lock
appears with its owner already written (a temporary file hard-linked into place), so a kill at any moment leaves
either no lock or one naming its dead owner, never an empty lock that every later process would take as held.
Locks only save work: shards are written atomically and deterministically, so two owners in a takeover race write
the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.data.io import atomic_write

POLL_S = 0.5        # how often a process waiting for another's shard looks again


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


def shard_bounds(weights: Sequence[int], *, target: int | None = None, size: int | None = None) -> list[list[int]]:
    """[start, stop) of each shard: ``size`` examples each, or contiguous runs of about ``target`` total weight
    (tokens) each; at least one example per shard."""
    n = len(weights)
    if size:
        return [[s, min(n, s + size)] for s in range(0, max(n, 1), size)]
    bounds, start, acc = [], 0, 0
    for i, w in enumerate(weights):
        acc += w
        if acc >= target:
            bounds.append([start, i + 1])
            start, acc = i + 1, 0
    if start < n or not bounds:
        bounds.append([start, n])
    return bounds


def is_complete(root: str | Path, spec: PassSpec) -> bool:
    meta = pass_dir(root, spec) / "meta.json"
    if not meta.exists():
        return False
    n = json.loads(meta.read_text())["n_shards"]
    return all((pass_dir(root, spec) / f"shard-{s:05d}.done").exists() for s in range(n))


def _alive(owner: dict) -> bool:
    """Whether a lock's owner may still be working: another host is assumed alive; here, the pid must exist."""
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


def _owner(path: Path) -> dict | None:
    """A lock's owner, or None when the lock is gone, empty or unreadable (an earlier siftlm could leave an empty
    lock when killed between creating it and writing it)."""
    try:
        owner = json.loads(path.read_text() or "null")
    except (OSError, json.JSONDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def _lock(path: Path) -> bool:
    """Take the shard's lock: a temporary file holding the owner is hard-linked to the lock's name, which fails when
    a lock exists. A lock left by a dead process, or an empty one, is removed and taken."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    tmp = path.with_name(f".{path.name}.{me['host']}.{me['pid']}.tmp")
    tmp.write_text(json.dumps(me))
    try:
        for _ in range(2):
            try:
                os.link(tmp, path)                   # atomic, and the owner is already in it
                return True
            except FileExistsError:
                owner = _owner(path)
                if owner is not None and _alive(owner):
                    return False
                path.unlink(missing_ok=True)          # a dead owner, or an empty lock: take it over
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _clear_orphans(folder: Path) -> None:
    """Temporary lock files of processes on this host that died between writing one and linking it."""
    host = socket.gethostname()
    for tmp in folder.glob(f".shard-*.lock.{host}.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive({"host": host, "pid": pid}):
            tmp.unlink(missing_ok=True)


def open_pass(root: str | Path, spec: PassSpec, n_examples: int, bounds: list[list[int]]) -> Path:
    """The pass's folder, with its ``meta.json`` written (or checked against ``bounds`` when it exists)."""
    folder = pass_dir(root, spec)
    folder.mkdir(parents=True, exist_ok=True)
    _clear_orphans(folder)
    meta = {"pass": spec.name, "dataset": spec.dataset, "model": spec.model, "settings": spec.settings,
            "n_examples": n_examples, "n_shards": len(bounds), "bounds": bounds}
    meta_path = folder / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("bounds") != bounds:
            raise RuntimeError(f"{folder}: the stored pass has other shards (shard size changed); run again with the "
                               "same --shard-size, or remove the folder to recompute")
    else:
        with atomic_write(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=str))
    return folder


def _paths(folder: Path, s: int) -> tuple[Path, Path, Path]:
    return tuple(folder / f"shard-{s:05d}.{ext}" for ext in ("parquet", "done", "lock"))


def shard_done(folder: Path, s: int) -> bool:
    shard, done, _ = _paths(folder, s)
    return done.exists() and shard.exists()


def compute_shard(folder: Path, s: int, bounds: list[list[int]], ids: Sequence[str],
                  compute: Callable[[int, int], dict[str, np.ndarray]]) -> str:
    """Compute shard ``s`` and store it (parquet, then its done marker) under its lock: "done" when it was already
    stored, "computed", or "busy" when another process holds its lock. Every backend stores shards through this."""
    shard, done, lock = _paths(folder, s)
    if shard_done(folder, s):
        return "done"
    if not _lock(lock):
        return "busy"
    try:
        if shard_done(folder, s):                # finished between our look and our lock
            return "done"
        start, stop = bounds[s]
        frame = pd.DataFrame({"id": list(ids[start:stop]), **compute(start, stop)})
        with atomic_write(shard) as tmp:
            frame.to_parquet(tmp, index=False)
        with atomic_write(done) as tmp:
            tmp.write_text("")
        return "computed"
    finally:
        lock.unlink(missing_ok=True)


def compute_pass(root: str | Path, spec: PassSpec, ids: Sequence[str],
             compute: Callable[[int, int], dict[str, np.ndarray]], *, bounds: list[list[int]] | None = None,
             on_skip: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Run ``compute(start, stop)`` for every shard of ``ids`` not yet done; return all rows in ``ids`` order.

    ``bounds``: the shards' [start, stop) (default: one shard). ``compute`` returns columns for examples
    ``ids[start:stop]``; they are stored with an ``id`` column. ``on_skip(n)`` reports examples served from
    finished shards (for progress bars).
    """
    bounds = bounds or [[0, len(ids)]]
    folder = open_pass(root, spec, len(ids), bounds)
    pending = list(range(len(bounds)))
    while pending:
        waiting = []
        for s in pending:
            state = compute_shard(folder, s, bounds, ids, compute)
            if state == "busy":
                waiting.append(s)            # another process is computing it: come back for its result
            elif state == "done" and on_skip:
                on_skip(bounds[s][1] - bounds[s][0])
        if waiting and len(waiting) == len(pending):
            time.sleep(POLL_S)
        pending = waiting
    out = read_shards(folder, len(bounds))
    if list(out["id"]) != list(ids):
        raise RuntimeError(f"{folder}: stored ids do not match the dataset; remove the folder to recompute")
    return out


def read_shards(folder: Path, n_shards: int) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(folder / f"shard-{s:05d}.parquet") for s in range(n_shards)], ignore_index=True)


def load_pass(root: str | Path, spec: PassSpec) -> pd.DataFrame:
    """All rows of a finished pass; error naming the folder if it is incomplete."""
    folder = pass_dir(root, spec)
    if not is_complete(root, spec):
        raise FileNotFoundError(f"{folder}: pass {spec.name} is not complete; run it first")
    return read_shards(folder, json.loads((folder / "meta.json").read_text())["n_shards"])

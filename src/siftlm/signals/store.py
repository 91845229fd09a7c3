"""Keyed, sharded, resumable signal store.

A pass is identified by (dataset fingerprint, model fingerprint, pass name, pass settings); its folder
``<root>/<pass>-<key>`` is a keyed folder (``siftlm.keyed``: its identity, one Parquet file per shard of columns
keyed by example id, a done marker per shard). Shards are contiguous slices of the example list sized by work
(about the same number of tokens each, so a shard is roughly a minute of compute whatever the lengths), so a rerun
computes only the shards without a marker; a changed input or setting gives a new key, never a stale read. Every
file is written under a temporary name and renamed.

Several processes (local runs, Ray actors, the ranks of a distributed training) may run the same pass on the same
store: a shard is taken with the keyed folder's lock, others skip it and come back for its result; a lock whose
process has died is taken over. A shard waited on for more than ``NOTICE_S`` is said, with who holds it and since
when; with a lock timeout, a lock held longer than that (e.g. by a node that died: a lock naming another host cannot
be checked) is taken over and the shard computed here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.backends.local import Executor as LocalExecutor
from siftlm.errors import KeyMismatch, MissingInput
from siftlm.keyed import Keyed, describe, done_marker, open_keyed, stored_identity
from siftlm.progress import console

POLL_S = 0.5        # how often a process waiting for another's shard looks again
NOTICE_S = 10.0     # a shard waited on this long is said: who holds it and since when
REPEAT_S = 300.0    # and said again this often while the wait lasts


def _say(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _watch(keyed: Keyed, busy: list[int], seen: dict, lock_timeout: float | None) -> None:
    """For every shard still held by another process: take the lock over when it is older than ``lock_timeout``,
    else say who holds it (after ``NOTICE_S`` of waiting, then every ``REPEAT_S``)."""
    now = time.time()
    for s in busy:
        owner = keyed.holder(shard(s))
        if owner is None:                   # released meanwhile: taken in the next round
            continue
        first, said = seen.setdefault(s, [now, 0.0])
        since = owner.get("time") if isinstance(owner.get("time"), (int, float)) else first
        where = f"{keyed.folder}/{shard(s)}"
        if lock_timeout is not None and now - since >= lock_timeout:
            if keyed.take_over(shard(s), owner):
                _say(f"{where}: locked by {describe(owner, now)}, longer than --lock-timeout {lock_timeout:g} s: "
                     "taking it over and computing the shard here")
            continue
        if now - first >= NOTICE_S and now - said >= REPEAT_S:
            seen[s][1] = now
            _say(f"waiting for {where}: locked by {describe(owner, now)}; if that process is gone (a node that died), "
                 f"remove {keyed.lock_path(shard(s))} or rerun with --lock-timeout SECONDS")


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


def _identity(spec: PassSpec, n_examples: int, bounds: list[list[int]]) -> dict:
    return {"pass": spec.name, "dataset": spec.dataset, "model": spec.model, "settings": spec.settings,
            "n_examples": n_examples, "n_shards": len(bounds), "bounds": bounds}


def shard(s: int) -> str:
    return f"shard-{s:05d}"


def open_pass(root: str | Path, spec: PassSpec, n_examples: int, bounds: list[list[int]]) -> Keyed:
    """The pass's keyed folder (``siftlm.keyed``): created, or checked against the shards it was made with (another
    --shard-size is refused, naming the bounds that differ)."""
    return open_keyed(pass_dir(root, spec), _identity(spec, n_examples, bounds), what=f"the {spec.name} pass")


def is_complete(root: str | Path, spec: PassSpec) -> bool:
    ident = stored_identity(pass_dir(root, spec))
    if ident is None:
        return False
    folder = pass_dir(root, spec)
    return all(done_marker(folder, shard(s)).exists() for s in range(ident["n_shards"]))


def shard_done(keyed: Keyed, s: int) -> bool:
    return keyed.done(shard(s)) and keyed.path(f"{shard(s)}.parquet").exists()


def compute_shard(keyed: Keyed, s: int, bounds: list[list[int]], ids: Sequence[str],
                  compute: Callable[[int, int], dict[str, np.ndarray]]) -> str:
    """Compute shard ``s`` and store it (parquet, then its done marker) under its lock: "done" when it was already
    stored, "computed", or "busy" when another process holds its lock. Every executor stores shards through this."""
    if shard_done(keyed, s):
        return "done"

    def work() -> None:
        start, stop = bounds[s]
        frame = pd.DataFrame({"id": list(ids[start:stop]), **compute(start, stop)})
        with keyed.writing(f"{shard(s)}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    return keyed.run(shard(s), work)


@dataclass
class Columns:
    """The simplest ShardWork: ``compute(start, stop)`` -> columns for ``ids[start:stop]``, in this process."""
    keyed: Keyed
    ids: Sequence[str]
    bounds: list[list[int]]
    compute: Callable[[int, int], dict]

    def units(self, s: int) -> int:
        return self.bounds[s][1] - self.bounds[s][0]

    def worker(self, progress):
        return lambda s: compute_shard(self.keyed, s, self.bounds, self.ids, self.compute)


def compute_pass(root: str | Path, spec: PassSpec, ids: Sequence[str], work, executor=None, *,
                 bounds: list[list[int]] | None = None, progress: Callable[[int], None] | None = None,
                 units: int = 1, lock_timeout: float | None = None) -> pd.DataFrame:
    """Every shard of ``ids`` not yet stored, computed by ``executor`` (``siftlm.backends``; default in this process)
    through ``work`` (a ShardWork whose worker stores a shard with ``compute_shard``, or a plain ``compute(start,
    stop)`` returning columns); shards another process holds are waited for (and said, with who holds them), or
    taken over once their lock is older than ``lock_timeout`` seconds. Returns all rows in ``ids`` order.
    ``progress(n)`` counts ``units`` per example, for shards served from the store too."""
    bounds = bounds or [[0, len(ids)]]
    keyed = open_pass(root, spec, len(ids), bounds)
    if not hasattr(work, "worker"):
        work = Columns(keyed, ids, bounds, work)
    executor = executor or LocalExecutor()
    size = lambda s: units * (bounds[s][1] - bounds[s][0])         # noqa: E731
    pending = [s for s in range(len(bounds)) if not shard_done(keyed, s)]
    if progress:
        progress(sum(size(s) for s in range(len(bounds)) if s not in pending))
    seen: dict[int, list[float]] = {}     # shard -> [when this process began waiting for it, when it was last said]
    while pending:
        states = executor.run_shards(pending, work, progress=progress)
        busy = [s for s in pending if states.get(s) == "busy"]
        if progress and not executor.remote:
            progress(sum(size(s) for s in pending if states.get(s) == "done"))   # finished by another process
        if busy:
            time.sleep(POLL_S)             # another process is computing them: come back for their results
            done_now = [s for s in busy if shard_done(keyed, s)]
            if progress:
                progress(sum(size(s) for s in done_now))
            busy = [s for s in busy if s not in done_now]
            _watch(keyed, busy, seen, lock_timeout)
        pending = busy
    out = read_shards(keyed.folder, len(bounds))
    if list(out["id"]) != list(ids):
        raise KeyMismatch(f"{keyed.folder}: stored ids do not match the dataset; remove the folder to recompute")
    return out


def read_shards(folder: Path, n_shards: int) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(folder / f"{shard(s)}.parquet") for s in range(n_shards)], ignore_index=True)


def load_pass(root: str | Path, spec: PassSpec) -> pd.DataFrame:
    """All rows of a finished pass; error naming the folder if it is incomplete."""
    folder = pass_dir(root, spec)
    if not is_complete(root, spec):
        raise MissingInput(f"{folder}: pass {spec.name} is not complete; run it first")
    return read_shards(folder, stored_identity(folder)["n_shards"])

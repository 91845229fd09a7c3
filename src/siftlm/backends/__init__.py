"""Where work runs: executors behind one small interface, chosen once from the config (``--backend``), so no compute
module knows whether it runs in this process or on a cluster (datatrove's executors are the model).

An executor can

- ``run_shards(shards, work, progress=...)``: compute shards of a pass; ``work`` is a picklable ``ShardWork`` whose
  ``worker(progress)`` builds, once per process, the function that computes and stores one shard (through the
  store's lock and done marker) and returns "computed", "done" or "busy";
- ``map_tasks(fn, args)``: ``[fn(*a) for a in args]``, independent pieces (DPP parts, k-means assignment);
- ``share(obj)``: ship an object once to where work runs; the work gets it back with ``fetch``;
- ``train(job, workers=N)``: a training job in N processes that form one process group (Ray Train's
  ``TorchTrainer``); the local executor runs it here (the ranks, if any, come from a launcher);
- ``remote``: whether work runs in other processes (then a model is loaded there from its files when it can be).

``EXECUTORS`` maps a backend name to the module that implements it; a Slurm or Accelerate-launched executor is one
more file with a class ``Executor`` and one more line here.

Executors are built at the boundary only (the CLI, or a recipe: ``siftlm.recipes.runtime``) and passed down, inside a
``Runtime``: what says where and how work runs (the executor, the store folder, progress bars, shard sizing, the lock
timeout) and never changes a result, apart from the settings that do (``SignalConfig.identity()``: part of every
key). A compute module given no runtime runs in this process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from siftlm.backends.local import Executor as _Local
from siftlm.config import UsageError, closest

EXECUTORS = {"local": "siftlm.backends.local", "ray": "siftlm.backends.ray"}
BACKENDS = {"local": "in this process, one device", "ray": "a Ray cluster (--ray-address, default a local one)"}


class ShardWork(Protocol):
    def worker(self, progress: Callable[[int], None] | None) -> Callable[[int], str]: ...

    def units(self, shard: int) -> int: ...


class Executor(Protocol):
    remote: bool

    def run_shards(self, shards: Sequence[int], work: ShardWork, *,
                   progress: Callable[[int], None] | None = None) -> dict[int, str]: ...

    def map_tasks(self, fn: Callable, args: Iterable[tuple]) -> list: ...

    def share(self, obj): ...

    def train(self, job: Callable[[], None], *, workers: int = 1, use_gpu: bool = False) -> None: ...


@dataclass(frozen=True)
class Runtime:
    """Where and how work runs, built once by the CLI or a recipe and passed down; no part of it is in any key."""
    executor: Executor = field(default_factory=_Local)
    store: str = "siftlm-store"                 # the signal store's folder
    progress: bool = True                       # progress bars
    shard_size: int | None = None               # examples per stored shard (else about ``shard_tokens`` tokens each)
    shard_tokens: int = 32768
    lock_timeout: float | None = None           # seconds before a shard locked by another process is taken over

    @classmethod
    def of(cls, cfg, executor: Executor | None = None) -> Runtime:
        """The runtime of a ``SignalConfig``'s where-and-how settings, with ``executor`` (default: this process)."""
        return cls(executor or _Local(), cfg.store, cfg.progress, cfg.shard_size, cfg.shard_tokens,
                   getattr(cfg, "lock_timeout", None))


def here() -> Executor:
    """The executor of this process (what compute modules use when given none)."""
    return _Local()


def executor(name: str = "local", **options) -> Executor:
    """The executor of backend ``name`` (options: ``address`` and ``actors`` for ray; unknown options are ignored by
    executors that have no use for them). Called only at the boundary: the CLI and the recipes."""
    if name not in EXECUTORS:
        raise UsageError(f"unknown backend {name!r}{closest(name, EXECUTORS)}; known: {', '.join(EXECUTORS)}")
    return importlib.import_module(EXECUTORS[name]).Executor(**options)


def fetch(obj):
    """What ``share`` shipped: the object itself, or the value behind a cluster's object reference."""
    if type(obj).__name__ == "ObjectRef" and type(obj).__module__.split(".")[0] == "ray":
        return importlib.import_module(EXECUTORS["ray"]).fetch(obj)     # Ray is imported by its executor only
    return obj

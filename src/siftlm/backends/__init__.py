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
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

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


def executor(name: str = "local", **options) -> Executor:
    """The executor of backend ``name`` (options: ``address`` and ``actors`` for ray; unknown options are ignored by
    executors that have no use for them)."""
    if name not in EXECUTORS:
        raise UsageError(f"unknown backend {name!r}{closest(name, EXECUTORS)}; known: {', '.join(EXECUTORS)}")
    return importlib.import_module(EXECUTORS[name]).Executor(**options)


def fetch(obj):
    """What ``share`` shipped: the object itself, or the value behind a cluster's object reference."""
    if type(obj).__name__ == "ObjectRef" and type(obj).__module__.split(".")[0] == "ray":
        import ray

        return ray.get(obj)
    return obj

"""Ray backend: shards of a model pass as a Ray Data job, and plain Ray tasks for other independent work.

A pass runs as ``ray.data.from_items(<pending shard numbers>).map_batches(<actor class>, batch_size=1)``: each actor
builds its worker once (loads the model onto its GPU, or CPU when the cluster has none) and then computes and
stores one shard per call through the same store function as the local loop, with the same lock and done
marker. A Ray run therefore resumes a half-finished local run and the reverse, and two runs never redo a
finished shard. ``ray`` is imported only here, only when used (``pip install 'siftlm[ray]'``).

Ray releases spell the actor pool differently: up to 2.50 ``map_batches(concurrency=n)`` (``compute=`` warned as
deprecated), from 2.51 ``compute=ActorPoolStrategy(size=n)`` (``concurrency=`` warned as deprecated).
``actor_pool`` picks the spelling of the installed release.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from siftlm.config import UsageError
from siftlm.errors import WorkerFailed

COMPUTE_SINCE = (2, 51)          # the first Ray release where map_batches wants compute=ActorPoolStrategy(size=n)
OLDEST = (2, 9)                  # the first with map_batches(concurrency=n)


def _ray():
    try:
        import ray
    except ImportError as e:
        raise UsageError("--backend ray needs Ray: pip install 'siftlm[ray]'") from e
    return ray


def version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def actor_pool(size: int, version: str | None = None) -> dict:
    """The keyword arguments of ``map_batches`` for a fixed pool of ``size`` actors in this Ray release."""
    v = version_tuple(version or _ray().__version__)
    if v < OLDEST:
        raise UsageError(f"Ray {version} is too old for siftlm's backend; need >= {OLDEST[0]}.{OLDEST[1]}")
    if v >= COMPUTE_SINCE:
        from ray.data import ActorPoolStrategy

        return {"compute": ActorPoolStrategy(size=size)}
    return {"concurrency": size}


def init(address: str | None = None, num_cpus: int | None = None):
    """Connect to the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local one (of ``num_cpus``, default
    all); once per process."""
    ray = _ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # A local cluster is started with workers at the driver's priority: Ray's default niceness of 15 starves the
        # workers (which do all of siftlm's compute) on a machine with any other load (measured: a 2-worker training
        # 44 s idle, 568 s beside two busy loops at nice 15, see tests/train/test_distributed.py). A cluster that is
        # already running keeps its own setting.
        local = {} if address else {"num_cpus": num_cpus, "_system_config": {"worker_niceness": 0}}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=True, **local)
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False     # siftlm's own bar counts examples
    return ray


def resources(address: str | None = None) -> tuple[int, int]:
    """(GPUs, CPUs) of the cluster."""
    res = init(address).cluster_resources()
    return int(res.get("GPU", 0)), int(res.get("CPU", 1))


class _ShardActor:
    """One per Ray actor: builds the worker once (the model is loaded here), then one shard per call."""

    def __init__(self, factory: Callable[[], Callable[[int], str]]):
        self.work = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        states = [self.work(int(s)) for s in batch["shard"]]
        return {"shard": np.asarray(batch["shard"]), "state": np.asarray(states)}


def _cause(e: BaseException) -> str:
    """The worker's own error line (e.g. "ZeroDivisionError: ..."), found in the traceback text Ray wraps it in."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(e).splitlines()]
    own = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b[^:]*:", line)
           and not re.match(r"^(ray\.[\w.]*|RayTaskError|UserCodeException)", line)]
    if own:
        return own[-1]
    first = next((line for line in lines if line), "")
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def run_shards(shards: Sequence[int], factory: Callable[[], Callable[[int], str]], *, address: str | None = None,
               actors: int | None = None, on_shard: Callable[[int, str], None] | None = None) -> dict[int, str]:
    """Run ``factory()(shard)`` for every shard on a pool of actors (one per GPU, else one per CPU, at most one
    per shard); ``on_shard(shard, state)`` as each finishes. Returns each shard's state ("computed", "done" or
    "busy" when another process held it)."""
    if not shards:
        return {}
    ray = init(address)
    gpus, cpus = resources(address)
    size = max(1, min(actors or gpus or cpus, len(shards)))
    ds = ray.data.from_items([{"shard": int(s)} for s in shards], override_num_blocks=len(shards))
    out = ds.map_batches(_ShardActor, batch_size=1, fn_constructor_args=(factory,), num_gpus=1 if gpus else 0,
                         num_cpus=1 if not gpus else max(1, cpus // max(gpus, 1)), **actor_pool(size))
    states = {}
    try:
        for row in out.iter_rows():
            states[int(row["shard"])] = str(row["state"])
            if on_shard:
                on_shard(int(row["shard"]), str(row["state"]))
    except ray.exceptions.RayError as e:      # a worker's exception arrives wrapped: name the innermost cause
        raise WorkerFailed(f"a Ray worker failed after {len(states)} of {len(shards)} shards (finished shards are "
                           f"stored; rerun to resume): {_cause(e)}") from e
    return states


class _Worker:
    """The actor's factory: a ShardWork's worker without progress (the driver counts finished shards)."""

    def __init__(self, work):
        self.work = work

    def __call__(self):
        return self.work.worker(None)


class Executor:
    """Shards on a pool of Ray actors, tasks as Ray tasks, shared objects in the object store."""
    remote = True

    def __init__(self, address: str | None = None, actors: int | None = None, **options):
        self.address, self.actors = address, actors

    def run_shards(self, shards: Sequence[int], work, *, progress: Callable[[int], None] | None = None) -> dict[int, str]:
        def tick(s: int, state: str) -> None:
            if progress and state != "busy":            # "busy": another process finishes it; counted then
                progress(work.units(s))
        return run_shards(shards, _Worker(work), address=self.address, actors=self.actors, on_shard=tick)

    def map_tasks(self, fn: Callable, args: Iterable[tuple]) -> list:
        return map_tasks(fn, args, address=self.address)

    def share(self, obj):
        return share(obj, self.address)

    def train(self, job: Callable[[], None], *, workers: int = 1, use_gpu: bool = False) -> None:
        """``job()`` in each of ``workers`` Ray Train workers (a TorchTrainer: the process group is set up for it)."""
        train(job, workers=workers, use_gpu=use_gpu, address=self.address)


def _train_worker(config: dict) -> None:
    config["job"]()


def train(job: Callable[[], None], *, workers: int, use_gpu: bool, address: str | None = None) -> None:
    """Ray Train's ``TorchTrainer`` over ``workers`` workers (one GPU each with ``use_gpu``) running ``job``; a worker's
    failure is one line naming its own error (the job resumes from its last saved epoch when run again)."""
    import tempfile

    init(address)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory(prefix="siftlm-ray-train-") as storage:     # siftlm keeps its own checkpoints
        trainer = TorchTrainer(_train_worker, train_loop_config={"job": job},
                               scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
                               run_config=RunConfig(storage_path=storage, name="siftlm-train"))
        try:
            result = trainer.fit()
        except Exception as e:                # Ray Train raises its own wrapper around the worker's error
            raise WorkerFailed(f"Ray Train failed ({workers} workers; saved epochs are kept, rerun to resume): "
                               f"{_cause(e)}") from e
        if result.error is not None:
            raise WorkerFailed(f"Ray Train failed ({workers} workers; saved epochs are kept, rerun to resume): "
                               f"{_cause(result.error)}")


def share(obj, address: str | None = None):
    """Put ``obj`` in the cluster's object store once; workers ``fetch`` it (no copy per task)."""
    return init(address).put(obj)


def fetch(ref):
    return _ray().get(ref)


def map_tasks(fn: Callable, args: Iterable[tuple], *, address: str | None = None, num_cpus: float = 1) -> list:
    """``[fn(*a) for a in args]`` as Ray tasks, results in order."""
    ray = init(address)
    remote = ray.remote(num_cpus=num_cpus)(fn)
    return ray.get([remote.remote(*a) for a in args])

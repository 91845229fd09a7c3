"""Where work runs, decided once at the boundary: the executor that ``--backend`` / ``--ray-address`` /
``--ray-actors`` (or the same YAML keys) name, inside the ``Runtime`` every pass, training and selection is handed
(``siftlm.backends``). Executors are built here and in the CLI only; compute modules take them as arguments."""

from __future__ import annotations

from siftlm.backends import Executor, Runtime, executor


def executor_for(cfg) -> Executor:
    """The executor of a config's ``backend``, ``ray_address`` and ``ray_actors`` (a SignalConfig or SelectConfig)."""
    return executor(getattr(cfg, "backend", "local"), address=getattr(cfg, "ray_address", None),
                    actors=getattr(cfg, "ray_actors", None))


def runtime_for(cfg) -> Runtime:
    """The runtime of a SignalConfig: its executor, store, progress, shard sizing and lock timeout."""
    return Runtime.of(cfg, executor_for(cfg))

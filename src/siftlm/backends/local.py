"""The local executor: everything in this process, one shard after another, with progress per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


class Executor:
    remote = False

    def __init__(self, **options):
        self.options = options                  # none are needed here

    def run_shards(self, shards: Sequence[int], work, *, progress: Callable[[int], None] | None = None) -> dict[int, str]:
        """Every shard in turn through one worker (built only when there is a shard to compute)."""
        if not shards:
            return {}
        compute = work.worker(progress)
        return {int(s): compute(int(s)) for s in shards}

    def map_tasks(self, fn: Callable, args: Iterable[tuple]) -> list:
        return [fn(*a) for a in args]

    def share(self, obj):
        return obj

    def train(self, job: Callable[[], None], *, workers: int = 1, use_gpu: bool = False) -> None:
        """Here: the ranks, if any, were started by a launcher."""
        job()

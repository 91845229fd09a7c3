"""Progress bars (rich) and wall-time accounting. Nested bars (an evaluation inside training) share one display."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
_active: list[Progress] = []


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else (f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s")


def log_line(description: str, done: int, total: int, elapsed: float) -> str:
    """'base loss: 64/128 (50%) elapsed 1m10s, 0.91/s, eta 1m10s'."""
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else 0.0
    return (f"{description}: {done}/{total} ({100 * done // max(total, 1)}%) elapsed {_clock(elapsed)}, "
            f"{rate:.3g}/s, eta {_clock(eta)}")


@contextlib.contextmanager
def bar(description: str, total: int, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """``with bar("base loss", n) as advance: advance(k)``; under a launcher only rank 0 shows bars."""
    if not enabled or int(os.environ.get("RANK", "0")):
        yield lambda n: None
        return
    if not console.is_terminal:  # a log file gets a line per 10 %: count, elapsed time, rate and ETA
        done, shown, start = [0], [0], time.perf_counter()

        def advance_log(n: int) -> None:
            done[0] += n
            step = done[0] * 10 // max(total, 1)
            if step > shown[0]:
                shown[0] = step
                console.print(log_line(description, done[0], total, time.perf_counter() - start), highlight=False)
        yield advance_log
        return
    if _active:  # inside another bar: add a row to the same display
        p = _active[-1]
        task = p.add_task(description, total=total)
        yield lambda n: p.advance(task, n)
        return
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*cols, console=console) as p:
        _active.append(p)
        try:
            task = p.add_task(description, total=total)
            yield lambda n: p.advance(task, n)
        finally:
            _active.pop()


class Timer:
    """Wall time per named step: ``with timer("base pass"): ...``; results in ``timer.times`` (seconds)."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.cached: list[str] = []     # steps served entirely from the store

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t, 2)

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


def log_line(description: str, done: int, total: int, elapsed: float, start: int = 0) -> str:
    """'base loss: 64/128 (50%) elapsed 1m10s, 0.91/s, eta 1m10s'; the rate counts only what was done since
    ``start`` (work resumed after ``start`` of ``total`` was already done)."""
    rate = (done - start) / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else 0.0
    return (f"{description}: {done}/{total} ({100 * done // max(total, 1)}%) elapsed {_clock(elapsed)}, "
            f"{rate:.3g}/s, eta {_clock(eta)}")


@contextlib.contextmanager
def bar(description: str, total: int, *, enabled: bool = True, start: int = 0) -> Iterator[Callable[[int], None]]:
    """``with bar("base loss", n) as advance: advance(k)``; under a launcher only rank 0 shows bars. ``start``: how
    much of ``total`` a resumed run had already done (the bar starts there; rate and ETA count only the rest)."""
    if not enabled or int(os.environ.get("RANK", "0")):
        yield lambda n: None
        return
    if not console.is_terminal:  # a log file gets a line per 10 %: count, elapsed time, rate and ETA
        done, began = [start], time.perf_counter()
        shown = [start * 10 // max(total, 1)]

        def advance_log(n: int) -> None:
            done[0] += n
            step = done[0] * 10 // max(total, 1)
            if step > shown[0]:
                shown[0] = step
                console.print(log_line(description, done[0], total, time.perf_counter() - began, start),
                              highlight=False)
        yield advance_log
        return
    if _active:  # inside another bar: add a row to the same display
        p = _active[-1]
        task = p.add_task(description, total=total, completed=start)
        yield lambda n: p.advance(task, n)
        return
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*cols, console=console) as p:
        _active.append(p)
        try:
            task = p.add_task(description, total=total, completed=start)
            yield lambda n: p.advance(task, n)
        finally:
            _active.pop()


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (the kernel's high-water mark), in GB."""
    import resource
    import sys

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 3 if sys.platform == "darwin" else 1024 ** 2)


class Timer:
    """Wall time per named step: ``with timer("base pass"): ...``; results in ``timer.times`` (seconds). Memory:
    ``timer.raised_gb[name]``, how far the step raised the process's peak resident memory (0 when it stayed under
    an earlier step's peak), so the step that sets a run's peak is the one with the last non-zero rise."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.cached: list[str] = []     # steps served entirely from the store
        self.raised_gb: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t, peak = time.perf_counter(), peak_rss_gb()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t, 2)
            self.raised_gb[name] = round(peak_rss_gb() - peak, 3)

    def memory(self) -> dict:
        """The process's peak resident memory (GB) and how far each step raised it: for a run's summary."""
        return {"peak_rss_gb": round(peak_rss_gb(), 3), "raised_by_step_gb": dict(self.raised_gb)}

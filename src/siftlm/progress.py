"""Progress bars (rich) that stay quiet when stderr is not a terminal unless asked."""

from __future__ import annotations

import contextlib
import sys
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


@contextlib.contextmanager
def bar(description: str, total: int, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """``with bar("base loss", n) as advance: advance(k)``."""
    if not enabled:
        yield lambda n: None
        return
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*cols, console=console, transient=False, disable=not sys.stderr.isatty() and False) as p:
        task = p.add_task(description, total=total)
        yield lambda n: p.advance(task, n)

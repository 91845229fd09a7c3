"""siftlm's own errors: a mistake in what the user asked for or gave, said in one line by the CLI.

Every error siftlm raises for something the user can fix derives from ``SiftlmError``; the CLI prints those as
``error: <message>`` (exit code 2 for a usage error, 1 otherwise) and lets anything else keep its traceback, since
that is a bug. Each kind also derives from the built-in exception it replaces (``UsageError`` is a ``ValueError``,
``KeyMismatch`` a ``RuntimeError``...), so code that caught those before still does.

- ``UsageError``: a wrong option value (unknown name, impossible combination); exit code 2;
- ``DataError``: an input that cannot be used as it is (a bad file, ids that are not in the dataset, no valid
  example);
- ``MissingInput``: an input file or folder that is not there (or not finished: run the step that makes it);
- ``KeyMismatch``: a keyed folder (a cache, a resumable run) holds work of another identity;
- ``DiskFull``: a write failed because the disk is full or the place is not writable; names the path;
- ``WorkerFailed``: a worker process (Ray, a distributed run) failed; its own error is in the message;
- ``Unavailable``: something siftlm needs cannot be had here (a package not installed, the hub offline);
- ``LockTimeout``: a lock held by another process was waited on longer than allowed.
"""

from __future__ import annotations


class SiftlmError(Exception):
    """A failure the user can fix; the CLI prints its message as one line and exits with ``exit_code``."""

    exit_code = 1


class UsageError(SiftlmError, ValueError):
    """A wrong option value (unknown name, impossible combination): the CLI exits with code 2, like a usage error."""

    exit_code = 2


class DataError(SiftlmError, ValueError):
    """An input cannot be used as it is (bad file, unknown format, wrong dataset...). The message names the file."""


class MissingInput(SiftlmError, FileNotFoundError):
    """An input file or folder is not there, or the step that makes it has not finished."""

    def __init__(self, message: str):
        super().__init__(message)     # one argument: str(e) is the message, not "[Errno ...]"


class KeyMismatch(SiftlmError, RuntimeError):
    """A keyed folder holds work of another identity."""


class DiskFull(SiftlmError, OSError):
    """A write failed for lack of space (or a read-only place); ``filename`` is the path being written."""


class WorkerFailed(SiftlmError, RuntimeError):
    """A worker process failed; finished work is kept, a rerun resumes."""


class Unavailable(SiftlmError, RuntimeError):
    """Something needed is not available here: a package that is not installed, a hub that cannot be reached."""


class LockTimeout(SiftlmError, TimeoutError):
    """A lock held by another process was not released in time."""

    def __init__(self, message: str):
        super().__init__(message)

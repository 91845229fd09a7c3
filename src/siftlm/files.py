"""Files: writing so that nothing is lost and nothing half-written is ever read (atomic files and folders, the usual
permissions, one line for a full disk or a read-only place), and the one YAML loader every config file goes through
(``--config``, experiment grids, mix files). Every layer reads and writes through these."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from siftlm.config import from_dict
from siftlm.errors import DataError, DiskFull, MissingInput

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(e: BaseException) -> str | None:
    """One line for a write that failed because the disk is full or the place is not writable, else None."""
    where = getattr(e, "filename", None) or ""
    code = getattr(e, "errno", None)
    if code in NO_SPACE or "No space left on device" in str(e):
        return f"no space left on device{f' writing {where}' if where else ''}: free some space or write elsewhere"
    if code in NOT_WRITABLE:
        return f"read-only: cannot write {where or 'the output'} ({os.strerror(code)}); choose another --out"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def umask_permissions(path: str | Path) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the permissions a plain write would: libraries
    that write through temporary files (safetensors: 0600) otherwise leave some outputs unreadable to others."""
    path, mask = Path(path), _umask()
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


MIN_FREE_BYTES = 64 << 20     # below this, a failed write is taken for a full disk


def _write_failure(e: BaseException, path: Path) -> DiskFull | None:
    """A failed write of ``path`` as a ``DiskFull`` naming ``path`` (not the temporary file), or None when the disk
    is not to blame. Libraries say "disk full" in their own ways (an OSError, torch's "PytorchStreamWriter failed
    writing file", safetensors' SafetensorError), so an error that is not an OSError is taken for a full disk when
    less than ``MIN_FREE_BYTES`` are left."""
    if isinstance(e, DiskFull) or not isinstance(e, Exception):
        return None
    code = getattr(e, "errno", None)
    if code in NO_SPACE or "No space left on device" in str(e):
        return DiskFull(errno.ENOSPC, "No space left on device", str(path))
    if code in NOT_WRITABLE:
        return DiskFull(code, os.strerror(code), str(path))
    if not isinstance(e, OSError):
        try:
            full = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free < MIN_FREE_BYTES
        except OSError:
            full = False
        if full:
            return DiskFull(errno.ENOSPC, "No space left on device", str(path))
    return None


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to path; on success it replaces path, on error it is removed. A write that fails for
    a full disk or a read-only place is raised as ``DiskFull`` naming ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; give the result the usual umask permissions
            umask_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        failure = _write_failure(e, path)
        if failure is not None:
            raise failure from e
        raise


def link_new(src: str | Path, dst: str | Path) -> bool:
    """Hard-link ``src`` to ``dst`` unless ``dst`` exists: an atomic create-if-absent whose content is in place before
    the name appears; False when ``dst`` was there already."""
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return False


def create_once(path: str | Path, text: str) -> str:
    """``text`` written at ``path`` unless a file is there already: of several processes writing at once the first
    wins and the others read it (atomic: nothing half-written is ever read). Returns what ``path`` holds."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask_permissions(tmp)
        return text if link_new(tmp, path) else path.read_text()
    except Exception as e:
        failure = _write_failure(e, path)
        if failure is not None:
            raise failure from e
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_folder(folder: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` into a temporary folder beside ``folder``, then rename it into place: a reader sees the whole
    folder or none. Whatever fails removes the temporary folder; a full disk (or a read-only place) is raised as
    ``DiskFull`` naming the folder."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = _write_failure(e, folder)
        if failure is not None:
            raise failure from e
        raise
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


# ---- YAML configs ----

def read_yaml(path, *, what: str = "config file") -> dict:
    """A YAML file's mapping; errors name the file (missing, not YAML, not a mapping)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: no such {what}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a mapping, got {type(spec).__name__}")
    return spec


def relative(path, value: str) -> str:
    """``value`` (a path written in the YAML file ``path``) relative to that file's folder; absolute paths and
    ``builtin:`` names as they are."""
    value = str(value)
    return value if value.startswith("builtin:") or Path(value).is_absolute() else str(Path(path).parent / value)


def load_yaml(cls, path, *, paths: tuple[str, ...] = (), what: str = "config file"):
    """``cls`` filled from a YAML file (``from_dict``: unknown keys are errors naming the closest known one), with
    the fields named in ``paths`` (dotted for nested configs, e.g. "signals.store") taken relative to the file."""
    cfg = from_dict(cls, read_yaml(path, what=what), where=str(path))
    for name in paths:
        *outer, leaf = name.split(".")
        owners = [cfg]
        for part in outer:
            owners.append(getattr(owners[-1], part))
        value = getattr(owners[-1], leaf)
        if value:
            new = replace(owners[-1], **{leaf: relative(path, value)})
            for owner, part in zip(reversed(owners[:-1]), reversed(outer), strict=True):
                new = replace(owner, **{part: new})
            cfg = new
    return cfg

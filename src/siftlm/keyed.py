"""One keyed folder, one resume rule: every resumable piece of work in siftlm lives in a ``Keyed`` folder.

A keyed folder holds ``siftlm-identity.json`` (everything that changes its result, written once) and units of work
(store shards, training epochs, DPP checkpoints, experiment cells, judge verdicts, DPO checkpoints). A unit is done
when its done marker ``<unit>.done`` exists; the marker is written, atomically, only after the unit's own outputs are
in place, so a kill at any moment leaves finished units marked and the rest redone. Several processes may work in
one folder: a unit is taken with a lock file that appears with its owner already in it (a temporary file
hard-linked into place), so a kill never leaves an empty lock, and a lock whose owner has died is taken over. A lock
naming another host cannot be checked from here and is assumed alive: who holds it and since when is said
(``describe``), and a lock older than a timeout may be taken over (``Keyed.take_over``); removing
``<folder>/<unit>.lock`` by hand clears the lock of a node that is gone.

The rule, the same everywhere:

- the same identity resumes: done units are skipped, the rest computed;
- another identity is refused before any work with one line naming the folder and what differs (``KeyMismatch``,
  printed by the CLI with exit code 1); nothing is silently recomputed, overwritten or mixed. Use another folder or
  remove this one.

Identities are compared after ``normalize`` (e.g. settings added to siftlm since the folder was written count as
their defaults).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from siftlm.errors import KeyMismatch
from siftlm.files import atomic_write, link_new

IDENTITY = "siftlm-identity.json"


def differences(stored, wanted, prefix: str = "", labels: dict | None = None) -> list[str]:
    """What differs between two identities, as 'key stored (now wanted)' phrases, nested keys dotted; a key with a
    label (e.g. {"dataset": "other data"}) is said by its label."""
    key = prefix.rstrip(".")
    if stored == wanted:
        return []
    if labels and key in labels:
        return [labels[key]]
    if isinstance(stored, dict) and isinstance(wanted, dict):
        out = []
        for k in sorted(set(stored) | set(wanted), key=str):
            out += differences(stored.get(k), wanted.get(k), f"{prefix}{k}.", labels)
        return out
    return [f"{key or 'identity'} {_short(stored)} (now {_short(wanted)})"]


def stale(stored, wanted) -> str | None:
    """Why a file whose recorded identity is ``stored`` (None: it recorded none) does not hold ``wanted`` (compared
    as JSON), or None when it does."""
    wanted = json.loads(json.dumps(wanted, default=str))
    if stored == wanted:
        return None
    return "made before siftlm recorded what from" if stored is None else "; ".join(differences(stored, wanted))


def _short(v) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


@dataclass
class Keyed:
    folder: Path
    identity: dict
    what: str                     # e.g. "a reference training", in error messages

    def path(self, name: str) -> Path:
        return self.folder / name

    def done(self, unit: str) -> bool:
        return done_marker(self.folder, unit).exists()

    def mark(self, unit: str) -> None:
        """Mark ``unit`` done (call after its outputs are written)."""
        with atomic_write(done_marker(self.folder, unit)) as tmp:
            tmp.write_text("")

    def write(self, name: str, text: str) -> Path:
        """A file of the folder, written atomically."""
        with atomic_write(self.folder / name) as tmp:
            tmp.write_text(text)
        return self.folder / name

    @contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """``with keyed.writing("x.parquet") as tmp: frame.to_parquet(tmp)``: atomic, nothing half-written."""
        with atomic_write(self.folder / name) as tmp:
            yield tmp

    def take(self, unit: str) -> bool:
        """Take ``unit``'s lock (False when a live process holds it); release with ``release``."""
        return take_lock(self.folder / f"{unit}.lock")

    def release(self, unit: str) -> None:
        (self.folder / f"{unit}.lock").unlink(missing_ok=True)

    def lock_path(self, unit: str) -> Path:
        return self.folder / f"{unit}.lock"

    def holder(self, unit: str) -> dict | None:
        """Who holds ``unit``'s lock ({"host", "pid", "time", ...}), or None when nobody does."""
        return _owner(self.lock_path(unit))

    def take_over(self, unit: str, owner: dict) -> bool:
        """Remove ``unit``'s lock if ``owner`` still holds it (a stale lock: its process is gone, or took too long), so
        the next ``run`` takes it. Safe with a live owner too: outputs are written atomically and deterministically,
        so two processes computing one unit write the same bytes."""
        if _owner(self.lock_path(unit)) != owner:
            return False
        self.lock_path(unit).unlink(missing_ok=True)
        return True

    def run(self, unit: str, work: Callable[[], None]) -> str:
        """``work()`` for ``unit`` under its lock unless done; "done", "computed" or "busy" (another process has it).
        ``work`` writes the unit's outputs; the done marker follows."""
        if self.done(unit):
            return "done"
        if not self.take(unit):
            return "busy"
        try:
            if self.done(unit):                  # finished between our look and our lock
                return "done"
            work()
            self.mark(unit)
            return "computed"
        finally:
            self.release(unit)


def done_marker(folder: str | Path, unit: str) -> Path:
    """Where a unit's done marker is (to look without opening the folder)."""
    return Path(folder) / f"{unit}.done"


def stored_identity(folder: str | Path) -> dict | None:
    path = Path(folder) / IDENTITY
    return json.loads(path.read_text()) if path.exists() else None


def _refuse(folder: Path, stored: dict, wanted: dict, what: str, normalize, labels) -> None:
    have = normalize(stored) if normalize else stored
    want = normalize(wanted) if normalize else wanted
    if _plain(have) != _plain(want):
        diff = differences(_plain(have), _plain(want), labels=labels)
        raise KeyMismatch(f"{folder}: holds {what} with {'; '.join(diff[:4])}"
                          f"{f' and {len(diff) - 4} more' if len(diff) > 4 else ''}; use another folder, or remove "
                          "it to start over")


def check_keyed(folder: str | Path, identity: dict, *, what: str, normalize: Callable[[dict], dict] | None = None,
                labels: dict | None = None) -> bool:
    """Whether ``folder`` holds work of ``identity`` (True) or no keyed work at all (False), writing nothing; work of
    another identity is refused as ``open_keyed`` refuses it."""
    stored = stored_identity(folder)
    if stored is None:
        return False
    _refuse(Path(folder), stored, _plain(identity), what, normalize, labels)
    return True


def open_keyed(folder: str | Path, identity: dict, *, what: str,
               normalize: Callable[[dict], dict] | None = None, labels: dict | None = None) -> Keyed:
    """The keyed folder for ``identity``: created with its identity, or checked against the one it holds (the rule
    above: ``KeyMismatch`` naming what differs). Lock files left by dead processes' interrupted takes are cleared."""
    folder = Path(folder)
    wanted = _plain(identity)
    stored = stored_identity(folder)
    if stored is not None:
        _refuse(folder, stored, wanted, what, normalize, labels)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        mine = folder / f".{IDENTITY}.{socket.gethostname()}.{os.getpid()}.tmp"
        with atomic_write(mine) as tmp:
            tmp.write_text(json.dumps(wanted, indent=2, sort_keys=True))
        try:
            first = link_new(mine, folder / IDENTITY)    # the first process to create the folder's identity wins
        finally:
            mine.unlink(missing_ok=True)
        if not first:                                  # another process made the folder at the same moment: check it
            return open_keyed(folder, identity, what=what, normalize=normalize, labels=labels)
    clear_orphans(folder)
    return Keyed(folder, wanted, what)


# ---- locks ----

def _started(pid) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot, with the boot id), to tell a reused pid from
    the owner; None where /proc does not say."""
    try:
        ticks = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[19]
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return f"{boot}:{ticks}"


def _alive(owner: dict) -> bool:
    """Whether a lock's owner may still be working: another host is assumed alive; here, the pid must exist and,
    when the lock recorded it, have started when the owner did (a restarted container reuses small pids)."""
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    recorded, now = owner.get("started"), _started(owner["pid"])
    return recorded is None or now is None or recorded == now


def describe(owner: dict, now: float | None = None) -> str:
    """'pid 123 on node-b since 2025-01-02 10:11:12 (4 min ago)': who holds a lock and since when."""
    now = time.time() if now is None else now
    since = owner.get("time")
    when = ""
    if isinstance(since, (int, float)):
        age = max(0.0, now - since)
        ago = f"{age:.0f} s" if age < 120 else f"{age / 60:.0f} min" if age < 7200 else f"{age / 3600:.1f} h"
        when = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))} ({ago} ago)"
    here = " (this host)" if owner.get("host") == socket.gethostname() else ""
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}{here}{when}"


def _owner(path: Path) -> dict | None:
    """A lock's owner, or None when the lock is gone, empty or unreadable (an earlier siftlm could leave an empty
    lock when killed between creating it and writing it)."""
    try:
        owner = json.loads(path.read_text() or "null")
    except (OSError, json.JSONDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def take_lock(path: Path) -> bool:
    """A temporary file holding the owner is hard-linked to the lock's name, which fails when a lock exists. A lock
    left by a dead process, or an empty one, is removed and taken. Locks only save work: every output is written
    atomically and deterministically, so two owners in a takeover race write the same bytes."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "started": _started(os.getpid())}
    tmp = path.with_name(f".{path.name}.{me['host']}.{me['pid']}.tmp")
    tmp.write_text(json.dumps(me))
    try:
        for _ in range(2):
            try:
                os.link(tmp, path)                   # atomic, and the owner is already in it
                return True
            except FileExistsError:
                owner = _owner(path)
                if owner is not None and _alive(owner):
                    return False
                path.unlink(missing_ok=True)          # a dead owner, or an empty lock: take it over
        return False
    finally:
        tmp.unlink(missing_ok=True)


def clear_orphans(folder: Path) -> None:
    """Temporary lock and identity files of processes on this host that died between writing one and linking it."""
    host = socket.gethostname()
    for tmp in [*folder.glob(f".*.lock.{host}.*.tmp"), *folder.glob(f".{IDENTITY}.{host}.*.tmp")]:
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive({"host": host, "pid": pid}):
            tmp.unlink(missing_ok=True)

"""The run-directory lock: one writing ``mrd`` command per run directory at a time.

Two processes writing one run directory (two ``pretrain`` runs with other seeds, ``distill``
while ``pretrain`` runs) would leave a pair of checkpoints that were not made together. A
writing command takes ``RUN/.mrd.lock`` first: a small JSON file naming the holder (pid,
host, command, start time), created atomically (written aside, then hard-linked into place,
which fails if a lock is already there). A second command is refused with the holder's pid
and command. A lock whose process is gone (same host, pid no longer alive) is stale: it is
removed and taken over, so a crash or SIGKILL never blocks the run directory for good.

Locks taken within one process are counted, so nested sessions of one command share it;
``release_all`` (called by the CLI when a command ends) drops every lock this process holds.
``held`` takes and gives back a lock around a block, optionally waiting for its holder: the
one lock of the project, for run directories and for any directory processes take in turn.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrd_cli.errors import MRDError
from mrd_cli.io import current_umask, read_limited

LOCK_NAME = ".mrd.lock"
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
# A lock file without a readable holder younger than this may still be being written.
_DAMAGED_GRACE_S = 2.0
# A holder record is a few hundred bytes; a bigger lock file is damaged.
_MAX_LOCK_BYTES = 64 << 10
# How often ``held(..., wait=True)`` looks again at a lock another process holds.
_WAIT_POLL_S = 0.2

# Lock path -> number of times this process took it.
_held: dict[Path, int] = {}
# Lock path -> the marker of this process's shared hold (``acquire_shared``).
_shared: dict[Path, Path] = {}
SHARED_PREFIX = ".mrd.shared."
# Run directories this process created to lock them: removed again if left empty.
_created: set[Path] = set()


class RunDirLocked(MRDError):
    """Another live ``mrd`` process holds the run directory."""


def check_run_dir(root: Path) -> None:
    """Refuse a run directory that exists but is not a directory."""
    if root.exists() and not root.is_dir():
        raise MRDError(
            f"The run directory {root} is a file, not a directory. Pass --run-dir with a "
            "directory (it is created if missing)."
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    except (OverflowError, ValueError):
        return False
    return True


def _read_holder(path: Path) -> dict[str, Any] | None:
    """The holder recorded in a lock file, or None if the file is gone or unreadable."""
    try:
        doc = json.loads(read_limited(path, _MAX_LOCK_BYTES, "lock file"))
    except FileNotFoundError:
        return None
    except (MRDError, OSError, ValueError, UnicodeDecodeError):
        return {}  # damaged, or not a regular file (a fifo there is never read)
    return doc if isinstance(doc, dict) else {}


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _is_stale(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True  # damaged lock file: no live holder can be named
    if holder.get("host") != socket.gethostname():
        return False  # cannot tell whether a process on another machine is alive
    return pid != os.getpid() and not _pid_alive(pid)


def acquire(
    root: Path,
    command: str,
    what: str = "run directory",
    option: str = "--run-dir",
    allow_shared: bool = False,
) -> bool:
    """Take the lock of run directory ``root`` for ``command``.

    Returns False (and takes nothing) when the directory cannot be written at all (a
    read-only run directory: the caller decides whether it can go on without writing).
    Raises ``RunDirLocked`` when another live process holds it, or holds it shared (a
    running `mrd tune` reads the pretrained pair), unless ``allow_shared``.
    """
    root = Path(root)
    check_run_dir(root)
    path = root.resolve() / LOCK_NAME
    if path in _held:
        _held[path] += 1
        return True
    existed = root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            return False
        raise
    if not existed:
        _created.add(path.parent)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # The holder is written aside under a name made by mkstemp (created exclusively, so no
    # link planted in the directory is ever followed), then linked into place.
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{LOCK_NAME}.", suffix=".tmp")
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            return False
        raise
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            fh.write(json.dumps(me) + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        for _ in range(50):
            try:
                _place(tmp, path)
            except FileExistsError:
                holder = _read_holder(path)
                if holder is None:
                    continue  # released meanwhile: try again
                if not holder and _age(path) < _DAMAGED_GRACE_S:
                    time.sleep(0.1)  # being written by its holder (no hard links): wait
                    continue
                if holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                    # Left by this very process (a command that ended without releasing).
                    path.unlink(missing_ok=True)
                    continue
                if _is_stale(holder):
                    path.unlink(missing_ok=True)
                    continue
                raise RunDirLocked(
                    f"The {what} {root} is in use by another mrd process (pid "
                    f"{holder.get('pid')} on {holder.get('host')}, running "
                    f"`{holder.get('command')}` since {holder.get('started')}). Wait for it "
                    f"to finish, or use another {option}. If that process is gone, delete "
                    f"{path}."
                ) from None
            else:
                _held[path] = 1
                readers = [] if allow_shared else _shared_holders(path)
                if readers:
                    release(root)
                    r = readers[0]
                    raise RunDirLocked(
                        f"The {what} {root} is in use by {len(readers)} running mrd "
                        f"process(es) that read it (pid {r.get('pid')} on {r.get('host')}, "
                        f"running `{r.get('command')}` since {r.get('started')}): changing "
                        "its files now would change their inputs midway. Wait for them to "
                        f"finish, or use another {option}."
                    )
                return True
        raise RunDirLocked(f"Could not take the lock {path}: it keeps changing hands. Try again.")
    finally:
        tmp.unlink(missing_ok=True)


def acquire_shared(root: Path, command: str) -> bool:
    """Hold ``root`` shared: other shared holders are welcome, an exclusive ``acquire`` is
    refused until ``release_shared`` (`mrd tune` while its trials read the pretrained pair:
    `mrd pretrain` or `mrd partition` must not replace it meanwhile). Taken under the
    exclusive lock, so it is refused while another command writes there. False when the
    directory cannot be written."""
    root = Path(root)
    if not acquire(root, command, allow_shared=True):
        return False
    try:
        path = root.resolve() / LOCK_NAME
        if path not in _shared:
            me = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=SHARED_PREFIX, suffix=".json")
            with os.fdopen(fd, "w") as fh:
                os.fchmod(fh.fileno(), 0o666 & ~current_umask())
                fh.write(json.dumps(me) + "\n")
            _shared[path] = Path(name)
    finally:
        release(root)
    return True


def release_shared(root: Path) -> None:
    """Give back this process's shared hold of ``root`` (none: nothing happens)."""
    marker = _shared.pop(Path(root).resolve() / LOCK_NAME, None)
    if marker is not None:
        marker.unlink(missing_ok=True)


def _shared_holders(path: Path) -> list[dict[str, Any]]:
    """The live shared holders of the lock ``path`` other than this process; the markers
    of dead ones are removed. (A marker is written under the exclusive lock, so one that
    the holder of that lock reads is complete; an unreadable one is damaged, hence stale.)"""
    live = []
    for marker in sorted(path.parent.glob(SHARED_PREFIX + "*")):
        holder = _read_holder(marker)
        if holder is None:
            continue
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            continue
        if _is_stale(holder):
            marker.unlink(missing_ok=True)
            continue
        live.append(holder)
    return live


def _place(tmp: Path, path: Path) -> None:
    """Put the complete lock file ``tmp`` at ``path``; FileExistsError if one is there.

    A hard link does it atomically; on a file system without hard links, an exclusive
    create does (a reader may then see it empty for an instant; ``acquire`` waits a moment
    before it takes an unreadable lock file for a stale one)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV):
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "w") as fh:
            fh.write(tmp.read_text())


def release(root: Path) -> None:
    """Give back one hold of ``root``'s lock (the file goes when the last hold does)."""
    path = Path(root).resolve() / LOCK_NAME
    count = _held.get(path, 0)
    if count > 1:
        _held[path] = count - 1
        return
    if count == 1:
        del _held[path]
        _unlink_if_mine(path)


def release_all() -> None:
    """Drop every lock this process holds (the CLI calls it when a command ends)."""
    for path in list(_shared):
        _shared.pop(path).unlink(missing_ok=True)
    for path in list(_held):
        del _held[path]
        _unlink_if_mine(path)


def _unlink_if_mine(path: Path) -> None:
    holder = _read_holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
    if path.parent in _created:
        _created.discard(path.parent)
        try:
            path.parent.rmdir()  # only if the command left nothing in it
        except OSError:
            pass


@contextlib.contextmanager
def held(root: Path, command: str, *, wait: bool = False) -> Iterator[bool]:
    """``acquire`` and ``release`` around a block; yields what ``acquire`` returned.

    With ``wait``, a lock held by another live process is waited for (polling, so a holder
    that dies is found stale and taken over) instead of refused: for a short step that
    processes take in turn, such as `mrd tune` preparing the run directory and opening its
    study (the lock of ``RUN/tune/.prepare``)."""
    while True:
        try:
            taken = acquire(root, command)
            break
        except RunDirLocked:
            if not wait:
                raise
            time.sleep(_WAIT_POLL_S)
    try:
        yield taken
    finally:
        if taken:
            release(root)

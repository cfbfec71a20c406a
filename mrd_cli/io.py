"""Atomic file writes: an interruption leaves either the previous good file or the new one.

Every checkpoint, partition file and metrics file goes through here: write a temporary file
in the same directory, flush and fsync, then rename over the target. The file gets the mode
any other tool would give it (0666 less the umask), not ``mkstemp``'s private 0600; an
interruption (Ctrl-C, SIGTERM turned into an exception by the CLI, a full disk) removes the
temporary file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

# Size budgets of the files mrd reads (checked before reading, see ``read_limited``).
MAX_JSON_BYTES = 256 << 20  # results, partition, manifest and state files
MAX_CSV_BYTES = 4 << 30  # one transcript file


def current_umask() -> int:
    """The process umask (read by setting and restoring it; Linux also shows it in /proc)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _stage(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary file beside ``path`` (a name no one can guess or
    plant a link at: ``mkstemp`` creates it exclusively) and return that file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # fsync / write errors name no file; say which one
        raise
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_many([(Path(path), data)])


def atomic_write_many(items: list[tuple[Path, bytes]]) -> None:
    """Write several files so that none replaces its target before all are written: each
    is staged under a temporary name, then all are renamed in order. On any failure
    (a full disk, Ctrl-C, SIGTERM) every temporary file is removed and no target changed
    before the first rename. A target that is a symlink is replaced, never followed."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in items:
            staged.append((_stage(Path(path), data), Path(path)))
        for tmp, path in staged:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                if exc.filename is None or exc.filename == str(tmp):
                    exc.filename = str(path)
                raise
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_write_yaml(path: Path, obj: Any, header: str = "") -> None:
    """``obj`` as YAML (keys in the order given), after an optional comment ``header``."""
    import yaml

    atomic_write_text(path, header + yaml.safe_dump(obj, sort_keys=False))


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch  # here, not at the top: the commands that only read files never load torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def check_regular_file(path: Path, limit: int, what: str) -> int:
    """The size of ``path``, a regular file (a symlink to one is fine) of at most ``limit``
    bytes; anything else (a directory, a fifo, a device, a symlink to one) is an MRDError
    naming it, a missing file FileNotFoundError. Call before reading: a fifo or a device would block or never end."""
    from mrd_cli.errors import MRDError

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise  # the callers say what a missing file means for them
    except OSError as exc:
        raise MRDError(f"Cannot read the {what} {path}: {exc.strerror or exc}.") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise MRDError(
            f"The {what} {path} is {kind} (a fifo, device or socket is never read). "
            "Pass a regular file."
        )
    if st.st_size > limit:
        raise MRDError(
            f"The {what} {path} is {st.st_size:,} bytes, more than the {limit:,} mrd reads "
            "for it. Check that it is the right file."
        )
    return st.st_size


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path`` after ``check_regular_file``; opened without blocking and
    checked again on the open file (it may have been swapped meanwhile), never more than
    ``limit`` bytes read."""
    from mrd_cli.errors import MRDError

    check_regular_file(path, limit, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise MRDError(f"Cannot read the {what} {path}: {exc.strerror or exc}.") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise MRDError(f"The {what} {path} is not a regular file. Pass a regular file.")
        # read(n) allocates n bytes up front: ask for what the file holds, plus one byte to
        # see whether it grew past the budget.
        data = fh.read(min(st.st_size, limit) + 1)
    if len(data) > limit:
        raise MRDError(f"The {what} {path} grew past {limit:,} bytes while being read.")
    return data


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

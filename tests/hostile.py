"""A hostile file system for the CLI tests: links, fifos and device links planted at the
paths a command reads or writes, files outside compared byte for byte, and every command
run in a subprocess under a timeout (pytest-timeout is not installed: a hang fails the test
instead of stalling the suite)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("Error:")]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None):
    """``python -m mrd_cli ARGS`` with this checkout first on the path; a run past
    ``timeout`` seconds (a command blocked on a fifo) fails the test."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mrd_cli", *args],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:  # the child is killed by subprocess.run
        raise AssertionError(f"`mrd {' '.join(args)}` hung past {timeout} s") from exc
    return Result(done.returncode, done.stdout, done.stderr)


class _Hung(Exception):
    pass


def invoke(*args: str, cwd: Path | None = None, timeout: int = 300) -> Result:
    """``mrd ARGS`` in this process (no interpreter start-up: quick), under a SIGALRM
    timeout that turns a hang into a failure."""
    from typer.testing import CliRunner

    from mrd_cli.cli.app import app

    def hung(signum, frame):
        raise _Hung()

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(timeout)
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        r = CliRunner().invoke(app, list(args))
    except _Hung:
        raise AssertionError(f"`mrd {' '.join(args)}` hung past {timeout} s") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(here)
    if isinstance(r.exception, _Hung):
        raise AssertionError(f"`mrd {' '.join(args)}` hung past {timeout} s")
    return Result(r.exit_code, r.stdout, r.stderr)


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit 2, exactly one ``Error:`` line (holding ``fragments``), no traceback."""
    assert result.code == 2, (result.code, result.stderr[-3000:])
    lines = result.error_lines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    joined = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in joined, (fragment, result.stderr[-3000:])


class Outside:
    """Files outside the directories a command may write, to check they are unchanged."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[Path, bytes] = {}

    def file(self, name: str, data: bytes = b"precious user data\n") -> Path:
        path = self.folder / name
        path.write_bytes(data)
        self.files[path] = data
        return path

    def assert_unchanged(self) -> None:
        for path, data in self.files.items():
            assert path.is_file() and not path.is_symlink(), path
            assert path.read_bytes() == data, f"{path} was changed"
        extra = sorted(set(self.folder.iterdir()) - set(self.files))
        assert not extra, f"files appeared outside: {extra}"


def plant_symlink(at: Path, target: Path) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, at)
    return at


def plant_fifo(at: Path) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(at)
    return at


def plant_device_link(at: Path, device: str = "/dev/zero") -> Path:
    """A symlink to a character device (endless zeros: reading it never ends)."""
    return plant_symlink(at, Path(device))


HOSTILE_KINDS = ("fifo", "dev-zero link", "dangling link", "directory")


def plant(kind: str, at: Path) -> Path:
    """Put one hostile thing of ``kind`` (one of ``HOSTILE_KINDS``) at ``at``."""
    if at.exists() or at.is_symlink():
        at.unlink()
    if kind == "fifo":
        return plant_fifo(at)
    if kind == "dev-zero link":
        return plant_device_link(at)
    if kind == "dangling link":
        return plant_symlink(at, at.parent / "no-such-file")
    if kind == "directory":
        at.mkdir(parents=True)
        return at
    raise ValueError(kind)


# Tiny transcripts and `mrd features` runs, shared by the hostile-input tests.

HEADER = ["dialogue_id", "utterance_id", "speaker", "text", "label", "split"]


def write_csv(path: Path, rows: list[list], header: list[str] = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def generic_csv(folder: Path, labels: dict[str, list[str]]) -> Path:
    """One CSV with a split column: per split, one dialogue whose lines carry ``labels``."""
    rows = []
    for split, names in labels.items():
        for u, name in enumerate(names):
            rows.append([f"{split}-1", u, "Ann", f"line {u} of {split}", name, split])
    write_csv(folder / "corpus.csv", rows)
    return folder


def features(*args: str, cache: Path, timeout: int = 300, subprocess: bool = False):
    """`mrd features ARGS` in this process, or in a subprocess (where a hang may block in
    the kernel: the subprocess is killed at the timeout)."""
    run = run_cli if subprocess else invoke
    return run("features", *args, "--cache-dir", str(cache), timeout=timeout)

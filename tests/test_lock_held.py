"""``core/lock.held``: the project's one lock around a block, refusing or waiting for a holder.

`mrd tune` processes take the lock of ``RUN/tune/.prepare`` in turn with ``wait=True``; a
holder that dies is found stale and the waiter goes on. The tests wait for states (files a
child writes, an event), never for a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mrd_cli.core import lock

_HOLDER = """
import sys, time
from pathlib import Path
from mrd_cli.core import lock
root, ready, go = map(Path, sys.argv[1:4])
assert lock.acquire(root, "holder")
ready.write_text("ready")
while not go.exists():
    time.sleep(0.05)
lock.release(root)
"""


def _start_holder(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    root, ready, go = tmp_path / "prep", tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root), str(ready), str(go)], env=env
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert child.poll() is None, "the holder exited before taking the lock"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.05)
    return child, go


def _waiter(root: Path) -> tuple[threading.Thread, threading.Event]:
    entered = threading.Event()

    def run() -> None:
        with lock.held(root, "waiter", wait=True) as taken:
            assert taken
            entered.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, entered


def test_held_refuses_a_live_holder_without_wait_and_waits_for_it_with_wait(tmp_path):
    child, go = _start_holder(tmp_path)
    try:
        with pytest.raises(lock.RunDirLocked, match="in use by another mrd process"):
            with lock.held(tmp_path / "prep", "refused"):
                pass
        thread, entered = _waiter(tmp_path / "prep")
        assert not entered.is_set()  # the holder has not let go: the waiter cannot be inside
        go.write_text("go")
        assert entered.wait(120), "the waiter never took the released lock"
        thread.join(120)
        assert child.wait(120) == 0
    finally:
        child.kill()
    assert not (tmp_path / "prep").exists()  # made to lock it, left empty: removed


@pytest.mark.slow
def test_a_waiter_takes_over_the_lock_of_a_holder_that_died(tmp_path):
    child, _ = _start_holder(tmp_path)
    thread, entered = _waiter(tmp_path / "prep")
    assert not entered.is_set()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(120)
    assert entered.wait(120), "the lock of a dead holder was never taken over"
    thread.join(120)

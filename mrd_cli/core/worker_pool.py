"""The worker processes behind ``ProcessExecutor``: a small pool that notices a lost worker.

``multiprocessing.Pool`` replaces a worker that dies (the kernel's out-of-memory killer
sends SIGKILL) and waits for its unit's result for ever, with the run-directory lock held.
Here each worker has its own pipe and the parent waits on the pipes and on the processes
at once: a worker that ends while it holds a unit is an ``MRDRunError`` as soon as the
kernel reports it. The other way round, a worker ends when its parent does, even a parent
killed with SIGKILL: on Linux the kernel signals it (``PR_SET_PDEATHSIG``), and everywhere
a thread in the worker watches a pipe whose only writer is the parent and exits at its end.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_JOIN_S = 10.0  # how long a worker that was asked to stop may take before it is killed


def _die_with_parent(parent_pid: int, lifeline: Connection, kernel_signal: bool) -> None:
    """End this worker when the process that started it ends, however it ends."""
    if kernel_signal and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
            pass
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the signal above was asked for

    def watch() -> None:
        try:
            lifeline.recv()  # nothing is ever sent: returns (EOFError) when the parent is gone
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="mrd-lifeline", daemon=True).start()


def _run_unit(fn: Callable[..., Any], index: int, unit: Any, shared: tuple) -> tuple:
    """``fn(unit, *shared)``; an exception comes back as data (its class may not survive
    pickling), to be raised again by the parent."""
    from mrd_cli.errors import MRDError

    try:
        return index, "ok", fn(unit, *shared)
    except MRDError as exc:
        return index, "mrd", (type(exc).__name__, str(exc))
    except Exception as exc:  # noqa: BLE001 - reported by the parent, with its type
        return index, "error", f"{type(exc).__name__}: {exc}"


def _worker_main(
    conn: Connection, lifeline: Connection, parent_pid: int, kernel_signal: bool
) -> None:
    _die_with_parent(parent_pid, lifeline, kernel_signal)
    # Ctrl-C reaches every process of the terminal's group: the parent alone handles it
    # (and ends the workers), so a worker does not print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        shared = conn.recv()
    except (EOFError, OSError):
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        fn, index, unit = job
        result = _run_unit(fn, index, unit, shared)
        try:
            conn.send(result)
        except Exception as exc:  # noqa: BLE001 - a result that cannot be pickled
            conn.send((index, "error", f"its result could not be sent back: {exc}"))


class LostWorker(Exception):
    """A worker ended while it held a unit (``index``; None: while it was being set up);
    ``how`` says how it ended."""

    def __init__(self, index: int | None, pid: int | None, how: str):
        super().__init__(f"worker {pid} {how} (unit {index})")
        self.index, self.pid, self.how = index, pid, how


class _Worker:
    def __init__(self, ctx: Any, shared: tuple) -> None:
        self.conn, child_conn = ctx.Pipe()
        life_reader, self.lifeline = ctx.Pipe(duplex=False)
        main = threading.current_thread() is threading.main_thread()
        # The kernel's parent-death signal follows the *thread* that started the worker:
        # asked for only when that thread is the main one, which lives as long as the process.
        self.process = ctx.Process(
            target=_worker_main,
            args=(child_conn, life_reader, os.getpid(), main),
            daemon=True,
            name="mrd-worker",
        )
        # Only small arguments go through ``start``: it writes them while holding the read
        # end of the same pipe, so a child killed while reading a large one would block it
        # for ever. The shared objects go through the worker's own pipe, whose other end
        # only the worker holds (a dead worker is then a broken pipe, not a hang).
        self.process.start()
        child_conn.close()
        life_reader.close()
        self.shared = shared

    def how_it_ended(self) -> str:
        self.process.join(1.0)
        code = self.process.exitcode
        if code is None:
            return "stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"was killed by {name}"
        return f"exited with status {code}"

    def stop(self, gently: bool) -> None:
        if gently:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(_JOIN_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(_JOIN_S)
        for end in (self.conn, self.lifeline):
            end.close()


def map_in_workers(
    fn: Callable[..., Any], units: list[Any], shared: tuple, workers: int
) -> Iterator[tuple[int, str, Any]]:
    """``(index, status, out)`` of ``_run_unit`` for every unit, as each finishes, from up
    to ``workers`` spawned processes. Raises ``LostWorker`` when a worker ends holding a
    unit; every worker is ended when this generator ends, however it ends."""
    ctx = multiprocessing.get_context("spawn")
    pool: list[_Worker] = []
    finished = False
    try:
        for _ in range(min(workers, len(units))):
            pool.append(_Worker(ctx, shared))
        todo = deque(enumerate(units))
        busy: dict[_Worker, int] = {}

        def feed(worker: _Worker) -> None:
            if not todo:
                return
            index, unit = todo.popleft()
            busy[worker] = index
            try:
                worker.conn.send((fn, index, unit))
            except OSError:  # its end of the pipe is gone: the worker died
                raise LostWorker(index, worker.process.pid, worker.how_it_ended()) from None

        for worker in pool:
            try:
                worker.conn.send(worker.shared)
            except OSError:
                raise LostWorker(None, worker.process.pid, worker.how_it_ended()) from None
            del worker.shared
        for worker in pool:
            feed(worker)
        while busy:
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in list(busy):
                if worker.conn in ready or worker.conn.poll():
                    try:
                        result = worker.conn.recv()
                    except (EOFError, OSError):
                        index = busy[worker]
                        raise LostWorker(index, worker.process.pid, worker.how_it_ended()) from None
                    del busy[worker]
                    feed(worker)
                    yield result
                elif worker.process.sentinel in ready:
                    index = busy[worker]
                    raise LostWorker(index, worker.process.pid, worker.how_it_ended())
        finished = True
    finally:
        for worker in pool:
            worker.stop(gently=finished)

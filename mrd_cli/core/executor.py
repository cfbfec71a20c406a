"""Where independent units of work run: one after another in this process
(``LocalExecutor``), side by side in worker processes on this machine
(``ProcessExecutor``), or as Ray tasks on this machine or a cluster (``RayExecutor``).

A recipe hands ``map`` a module-level function and its units (an ablation cell, a
comparison cell, one role's fold models); the results come back as they finish, each with
its unit's index. A unit returns plain data (metrics, predictions, checkpoint bytes) and
the recipe, in this process, writes the run directory: a worker never writes there, so
nothing is written twice or half-written, and a unit whose result was written is reused
on the next run whichever executor made it. Ray is an optional extra, imported only when a
``RayExecutor`` is made.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

from mrd_cli.config import ExecutorConfig
from mrd_cli.core.worker_pool import LostWorker, map_in_workers
from mrd_cli.errors import MRDError, MRDRunError

EXECUTORS = ("local", "processes", "ray")
INSTALL_HINT = "pip install 'mrd-cli[ray]'"


class Executor(Protocol):
    """What a recipe needs of an executor."""

    kind: str
    # True when the units run in this process: they may then take callbacks (progress
    # bars) and share this process's device tensors.
    in_process: bool

    def device(self, here: str) -> str:
        """The device a unit trains on (``here``: this process's)."""
        ...

    def slots(self) -> int:
        """How many units can run at once."""
        ...

    def map(
        self, fn: Callable[..., Any], units: list[Any], *shared: Any
    ) -> Iterator[tuple[int, Any]]:
        """``(index, fn(units[index], *shared))`` for every unit, as each finishes."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Every unit in this process, in order."""

    kind = "local"
    in_process = True

    def device(self, here: str) -> str:
        return here

    def slots(self) -> int:
        return 1

    def map(
        self, fn: Callable[..., Any], units: list[Any], *shared: Any
    ) -> Iterator[tuple[int, Any]]:
        for index, unit in enumerate(units):
            yield index, fn(unit, *shared)

    def close(self) -> None:
        pass


class ProcessExecutor:
    """Units side by side in worker processes on this machine, one unit per
    ``executor.cpus_per_task`` cores (``ExecutorConfig``) of ``cores`` (default: all of
    this machine's).

    A lighter alternative to Ray for one machine: the workers are started ("spawn") for
    each ``map`` and receive the shared objects once each (``core/worker_pool.py``: a
    worker lost mid-unit is an error at once, and the workers end with this process). Separate processes, unlike more
    torch threads in one process, do not slow each other down by more than their share
    of the cores when the machine is busy. Each unit sets its own thread count
    (``threads``); the results equal those of the local executor."""

    kind = "processes"
    in_process = False

    def __init__(self, resources: ExecutorConfig, cores: int | None = None):
        cores = cores or os.cpu_count() or 1
        self.workers = max(1, int(cores // max(resources.cpus_per_task, 1e-9)))
        self.gpus = resources.gpus_per_task

    def device(self, here: str) -> str:
        return "cuda" if self.gpus > 0 else here

    def slots(self) -> int:
        return self.workers

    def map(
        self, fn: Callable[..., Any], units: list[Any], *shared: Any
    ) -> Iterator[tuple[int, Any]]:
        if not units:
            return
        # ``closing``: the workers are ended as soon as this loop ends, error or not (an
        # exception's traceback would otherwise keep the generator, and them, alive).
        try:
            with closing(map_in_workers(fn, units, shared, self.workers)) as results:
                for index, status, out in results:
                    if status == "mrd":
                        name, message = out
                        cls = next((c for c in _mrd_errors() if c.__name__ == name), MRDRunError)
                        raise cls(message)
                    if status == "error":
                        raise MRDRunError(f"A worker process failed: {out}")
                    yield index, out
        except LostWorker as lost:
            if lost.index is None:
                when = "while it was being set up"
            else:
                when = f"while it ran unit {lost.index + 1} of {len(units)}"
            raise MRDRunError(
                f"A worker process (pid {lost.pid}) {lost.how} {when}; the other "
                "workers were stopped. The "
                "kernel's out-of-memory killer ends a process this way: give each unit more "
                "memory (fewer side by side: a larger executor.cpus_per_task) or use "
                "--executor local. Finished units were kept; rerun the command to go on."
            ) from None

    def close(self) -> None:
        pass


def _mrd_errors() -> list[type[MRDError]]:
    """``MRDError`` and its subclasses, to raise a worker's error again as its own class."""
    out, todo = [], [MRDError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def ray_runtime_env() -> dict[str, Any]:
    """What a Ray job started from here ships to its workers: this process's ``mrd_cli``
    package, so that every worker runs the same code as the driver (pass it to ``ray.init``
    when starting Ray yourself)."""
    return {"py_modules": [str(Path(__file__).resolve().parents[1])]}


def require_ray() -> Any:
    """The ray module, or a user error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise MRDError(f"--executor ray needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


class RayExecutor:
    """Each unit a Ray task asking for ``cpus`` cores and ``gpus`` GPUs (``ExecutorConfig``).

    ``address``: a running cluster's address (``auto``: the one ``ray start`` made on this
    machine, or ``RAY_ADDRESS``); None starts a Ray runtime of ``num_cpus`` cores (default:
    all) on this machine for this process alone and stops it at ``close``. A Ray runtime
    already started in this process (``ray.init`` by a test or a notebook) is used as it is.
    A runtime started here ships this process's own ``mrd_cli`` to the workers
    (``ray_runtime_env``), so every machine needs only the dependencies installed.
    """

    kind = "ray"
    in_process = False

    def __init__(
        self, resources: ExecutorConfig, address: str | None = None, num_cpus: int | None = None
    ):
        ray = require_ray()
        self._ray = ray
        self.cpus, self.gpus = resources.cpus_per_task, resources.gpus_per_task
        self._started = False
        if not ray.is_initialized():
            on_sigterm = signal.getsignal(signal.SIGTERM)
            try:
                ray.init(
                    address=address,
                    num_cpus=None if address else num_cpus,
                    include_dashboard=False,
                    configure_logging=False,
                    log_to_driver=False,
                    runtime_env=ray_runtime_env(),
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
                raise MRDError(
                    f"Cannot connect to {where}: {why}. "
                    "Start one with `ray start --head` (see README, 'Running on a cluster'), "
                    "or leave out --address to start one on this machine."
                ) from None
            self._started = True
            # Ray's core installs a SIGTERM handler that aborts the process; the CLI's own
            # (cli/app.py) unwinds like Ctrl-C, so that the locks are released and this
            # runtime stops. Put it back.
            if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
                signal.signal(signal.SIGTERM, on_sigterm)
        available = ray.cluster_resources()
        if self.cpus > available.get("CPU", 0) or self.gpus > available.get("GPU", 0):
            self.close()
            raise MRDError(
                f"Each task asks for {self.cpus:g} CPU and {self.gpus:g} GPU "
                "(executor.cpus_per_task, executor.gpus_per_task), but the Ray cluster has "
                f"{available.get('CPU', 0):g} CPU and {available.get('GPU', 0):g} GPU in all; "
                "no task could start."
            )

    def device(self, here: str) -> str:
        return "cuda" if self.gpus > 0 else "cpu"

    def slots(self) -> int:
        total = self._ray.cluster_resources()
        fits = [int(total.get("CPU", 0) // self.cpus)]
        if self.gpus > 0:
            fits.append(int(total.get("GPU", 0) // self.gpus))
        return max(1, min(fits))

    def map(
        self, fn: Callable[..., Any], units: list[Any], *shared: Any
    ) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        if not units:
            return
        refs = [ray.put(obj) for obj in shared]  # sent to the object store once, not per task
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)(fn)
        # An interrupted driver leaves its tasks to Ray, which ends a job's tasks when the job
        # ends (cancelling them here, force=True, crashed Ray's own threads during shutdown).
        pending = {task.remote(unit, *refs): i for i, unit in enumerate(units)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            yield index, self._get(done[0])

    def _get(self, ref: Any) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, MRDError):
                raise type(cause)(str(cause)) from None
            raise MRDRunError(f"A Ray task failed: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayError as exc:
            raise MRDRunError(f"A Ray task was lost: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(
    kind: str, resources: ExecutorConfig, address: str | None = None, num_cpus: int | None = None
) -> Executor:
    """The executor ``--executor`` names; ``--address`` only makes sense with Ray."""
    if kind in ("local", "processes") and address is not None:
        raise MRDError("--address names a Ray cluster; use it with --executor ray.")
    if kind == "local":
        return LocalExecutor()
    if kind == "processes":
        return ProcessExecutor(resources, num_cpus)
    if kind == "ray":
        return RayExecutor(resources, address, num_cpus)
    raise MRDError(
        f"Unknown executor '{kind}'; use {', '.join(EXECUTORS[:-1])} or {EXECUTORS[-1]}."
    )

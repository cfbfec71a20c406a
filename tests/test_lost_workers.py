"""Worker processes that die, and parents that die: `--executor processes` never hangs.

A worker killed mid-unit (SIGKILL, as the kernel's out-of-memory killer sends) is an error
within seconds, the other workers are stopped and the run-directory lock is released; a
parent killed with SIGKILL takes its workers with it. Every wait here waits for a state (a
file a unit wrote, a process gone) under a generous bound, never for a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from mrd_cli.config import ExecutorConfig
from mrd_cli.core.executor import make_executor
from mrd_cli.errors import MRDRunError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
BOUND_S = 300  # generous: the machine may be busy; a hang would wait for ever

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads processes from Linux's /proc"
)


def _hold(unit: int, folder: str) -> int:
    """A unit that says it started (a file named after its process) and then waits until
    the test lets it go (a file ``release``), or is killed."""
    here = Path(folder)
    (here / f"started.{unit}.{os.getpid()}").write_text("")
    deadline = time.monotonic() + BOUND_S
    while not (here / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return unit


def wait_for(state, what: str, bound: float = BOUND_S):
    """Poll ``state()`` until it is truthy (returned) or ``bound`` seconds pass (fail)."""
    deadline = time.monotonic() + bound
    while not (value := state()):
        assert time.monotonic() < deadline, f"not seen within {bound:.0f} s: {what}"
        time.sleep(0.05)
    return value


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def started(folder: Path, count: int) -> list[int] | None:
    pids = [int(p.name.rsplit(".", 1)[1]) for p in folder.glob("started.*")]
    return pids if len(pids) >= count else None


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, todo = set(), [pid]
    while todo:
        here = todo.pop()
        for child, parent in parents.items():
            if parent == here and child not in out:
                out.add(child)
                todo.append(child)
    return out


def worker_children(pid: int) -> set[int]:
    """The spawned worker processes whose parent is ``pid``."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def test_a_worker_killed_mid_unit_is_an_error_within_seconds_and_the_others_stop(tmp_path):
    executor = make_executor("processes", ExecutorConfig(), num_cpus=2)
    outcome: dict[str, BaseException] = {}

    def consume() -> None:
        try:
            list(executor.map(_hold, [0, 1, 2], str(tmp_path)))
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    victim, other = wait_for(lambda: started(tmp_path, 2), "both workers holding a unit")
    os.kill(victim, signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive(), "the map did not notice its lost worker"
    error = outcome.get("error")
    assert isinstance(error, MRDRunError), error
    assert f"pid {victim}" in str(error) and "SIGKILL" in str(error)
    assert "Finished units were kept" in str(error)
    wait_for(lambda: not alive(other), "the other worker ending", 60)
    (tmp_path / "release").write_text("")


PARENT = """
import sys
sys.path.insert(0, {tests!r})
from mrd_cli.config import ExecutorConfig
from mrd_cli.core.executor import make_executor
from test_lost_workers import _hold
list(make_executor("processes", ExecutorConfig(), num_cpus=2).map(_hold, [0, 1], {folder!r}))
"""


def test_workers_end_when_their_parent_is_killed(tmp_path):
    script = PARENT.format(tests=str(ROOT / "tests"), folder=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script], env=ENV, cwd=ROOT)
    try:
        workers = wait_for(lambda: started(tmp_path, 2), "both workers holding a unit")
        parent.kill()
        parent.wait(60)
        for pid in workers:
            wait_for(lambda pid=pid: not alive(pid), f"worker {pid} ending with its parent", 60)
    finally:
        parent.kill()
        (tmp_path / "release").write_text("")


TINY = {
    "model": {"hidden": 16},
    "pretrain": {"epochs": 1, "batch_size": 32},
    "partition": {"method": "in_sample"},
    "distill": {"epochs": 4, "batch_size": 32},
    "ablate": {"bootstrap": 20},
}


def _ablate(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mrd_cli", "ablate", "--config", str(config)]
    command += ["--run-dir", str(run), "--device", "cpu", "--seeds", "2", "--without", "rcl"]
    command += ["--executor", "processes"]
    driver = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV
    )
    return driver, run


@pytest.mark.slow
def test_cli_a_killed_worker_is_one_error_line_the_lock_is_released_no_worker_left(tmp_path):
    driver, run = _ablate(tmp_path)
    try:
        workers = wait_for(lambda: worker_children(driver.pid), "a worker process")
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        _, err = driver.communicate(timeout=BOUND_S)
    finally:
        driver.kill()
    assert driver.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"pid {victim}" in errors[0], err[-2000:]
    assert "SIGKILL" in err
    assert not (run / ".mrd.lock").exists()
    for pid in workers:
        wait_for(lambda pid=pid: not alive(pid), f"worker {pid} ending", 60)


@pytest.mark.slow
def test_cli_killed_with_sigkill_leaves_no_worker_behind(tmp_path):
    driver, run = _ablate(tmp_path)
    try:
        workers = wait_for(lambda: worker_children(driver.pid), "a worker process")
        driver.kill()
        driver.communicate(timeout=60)
    finally:
        driver.kill()
    for pid in workers:
        wait_for(lambda pid=pid: not alive(pid), f"worker {pid} ending with its parent", 60)


RAY_PARENT = """
import os, sys, time
from pathlib import Path
from mrd_cli.config import ExecutorConfig
from mrd_cli.core.executor import make_executor
from mrd_cli.errors import MRDRunError

def hold(unit, folder):  # defined here: Ray ships a function of __main__ by value
    here = Path(folder)
    (here / f"started.{{unit}}.{{os.getpid()}}").write_text("")
    deadline = time.monotonic() + {bound}
    while not (here / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return unit

executor = make_executor("ray", ExecutorConfig(), num_cpus=2)
try:
    list(executor.map(hold, [0, 1], {folder!r}))
except MRDRunError as exc:
    print("LOST:", exc, flush=True)
    sys.exit(3)
finally:
    executor.close()
"""


def _ray_parent(tmp_path: Path) -> subprocess.Popen:
    pytest.importorskip("ray")
    script = RAY_PARENT.format(bound=BOUND_S, folder=str(tmp_path))
    return subprocess.Popen(
        [sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_ray_a_task_killed_mid_unit_is_a_run_error(tmp_path):
    parent = _ray_parent(tmp_path)
    try:
        victim = wait_for(lambda: started(tmp_path, 1), "a Ray task holding a unit")[0]
        os.kill(victim, signal.SIGKILL)
        out, _ = parent.communicate(timeout=BOUND_S)
    finally:
        parent.kill()
        (tmp_path / "release").write_text("")
    assert parent.returncode == 3 and "A Ray task was lost" in out, out


@pytest.mark.slow
def test_ray_workers_end_when_their_driver_is_killed(tmp_path):
    parent = _ray_parent(tmp_path)
    try:
        workers = wait_for(lambda: started(tmp_path, 2), "both Ray tasks holding a unit")
        # Every process of the driver's Ray runtime (raylet, GCS, agents, workers).
        runtime = descendants(parent.pid)
        parent.kill()
        parent.wait(60)
        for pid in {*workers, *runtime}:
            wait_for(lambda pid=pid: not alive(pid), f"Ray process {pid} ending", BOUND_S)
    finally:
        parent.kill()
        (tmp_path / "release").write_text("")

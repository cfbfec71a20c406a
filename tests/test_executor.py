"""The executors: the Ray executor gives the local executor's results, finished units are
reused after an interruption, and without Ray installed `--executor ray` says what to
install. The Ray tests start one Ray runtime of two CPUs on this machine (module-scoped:
starting Ray takes seconds)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.config import Config, ExecutorConfig
from mrd_cli.core.executor import LocalExecutor, make_executor
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import Session
from mrd_cli.errors import MRDError, MRDRunError
from mrd_cli.recipes.ablate import ablate
from mrd_cli.recipes.compare import compare
from mrd_cli.recipes.partition import partition
from mrd_cli.recipes.pretrain import pretrain


def _toy_session(root: Path, corpus, method: str = "in_sample") -> Session:
    cfg = Config()
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 2
    cfg.partition.method = method
    cfg.partition.folds = 2
    cfg.distill.epochs = 2
    cfg.ablate.bootstrap = 50
    return Session(cfg, corpus, RunDir(root), torch.device("cpu"))


def _square(unit: int, offset: int) -> int:
    return unit * unit + offset


def test_local_executor_maps_units_in_order_with_shared_arguments():
    assert list(LocalExecutor().map(_square, [1, 2, 3], 10)) == [(0, 11), (1, 14), (2, 19)]


def _fails(unit: int, kind: str) -> int:
    if unit == 2 and kind == "mrd":
        raise MRDError(f"unit {unit} has bad data")
    if unit == 2:
        raise ZeroDivisionError("division by zero")
    return unit


def test_process_executor_maps_units_in_worker_processes_with_shared_arguments():
    executor = make_executor("processes", ExecutorConfig(cpus_per_task=1), num_cpus=2)
    assert executor.slots() == 2 and not executor.in_process
    assert sorted(executor.map(_square, [1, 2, 3], 10)) == [(0, 11), (1, 14), (2, 19)]
    assert list(executor.map(_square, [], 10)) == []
    # Two cores per unit on four cores: two workers.
    assert make_executor("processes", ExecutorConfig(cpus_per_task=2), num_cpus=4).slots() == 2


def test_process_executor_raises_a_workers_error_in_the_parent():
    executor = make_executor("processes", ExecutorConfig(), num_cpus=2)
    # A project error keeps its class (and so its exit code); anything else is a run error
    # that names the original exception.
    with pytest.raises(MRDError, match="unit 2 has bad data") as user_error:
        list(executor.map(_fails, [1, 2, 3], "mrd"))
    assert user_error.type is MRDError
    with pytest.raises(MRDRunError, match="ZeroDivisionError: division by zero"):
        list(executor.map(_fails, [1, 2, 3], "other"))


def test_ray_executor_without_ray_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(MRDError, match=r"pip install 'mrd-cli\[ray\]'"):
        make_executor("ray", ExecutorConfig())


def test_address_without_ray_and_unknown_executor_are_refused():
    with pytest.raises(MRDError, match="--executor ray"):
        make_executor("local", ExecutorConfig(), address="auto")
    with pytest.raises(MRDError, match="local, processes or ray"):
        make_executor("dask", ExecutorConfig())
    with pytest.raises(MRDError, match="--executor ray"):
        make_executor("processes", ExecutorConfig(), address="auto")


def test_cli_ray_executor_without_ray_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"hidden": 16}, "pretrain": {"epochs": 1}}))
    common = ["--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    res = CliRunner().invoke(app, ["ablate", *common, "--executor", "ray"])
    assert res.exit_code == 2
    assert "Error:" in res.output and "mrd-cli[ray]" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "run" / "pretrain").exists()  # refused before any training


def test_ray_is_imported_only_inside_functions():
    # Fast and static: no module-level `import ray` anywhere in the package.
    import ast

    for path in (Path(__file__).resolve().parents[1] / "mrd_cli").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "ray" for n in names), path


@pytest.mark.slow
def test_importing_the_package_and_the_cli_does_not_import_ray():
    code = "import sys, mrd_cli, mrd_cli.cli.app; sys.exit('ray' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_executor_resources_are_validated():
    from mrd_cli.config import load_config

    with pytest.raises(MRDError, match="executor.cpus_per_task"):
        load_config("synthetic", overrides={"executor": {"cpus_per_task": 0}})


# --------------------------------------------------------------------------------------
# A local Ray runtime


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    from mrd_cli.core.executor import ray_runtime_env

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        runtime_env=ray_runtime_env(),
    )
    yield ray
    ray.shutdown()


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_ray_executor_gives_the_local_executors_results(tmp_path, toy_corpus, ray_runtime):
    _same_results_as_local(tmp_path, toy_corpus, make_executor("ray", ExecutorConfig()))


@pytest.mark.slow
def test_process_executor_gives_the_local_executors_results(tmp_path, toy_corpus):
    executor = make_executor("processes", ExecutorConfig(), num_cpus=2)
    assert executor.slots() == 2
    _same_results_as_local(tmp_path, toy_corpus, executor)


def _same_results_as_local(tmp_path, toy_corpus, other) -> None:
    # The cross-fitted partition's fold models, the ablation's cells, the comparison's cells.
    runs = {}
    for name, executor in (("local", LocalExecutor()), ("ray", other)):
        session = _toy_session(tmp_path / name, toy_corpus, method="cross_fit")
        pretrain(session)
        # The cross-fitted partition's fold models: one unit per role.
        part = partition(session, executor=executor)
        result = ablate(session, [("mic",)], seeds=2, executor=executor)
        backbones = compare(session, ["dialogue", "foal"], seeds=1, executor=executor)
        runs[name] = (session, part.document, result, backbones)
    (s_local, doc_local, local, cmp_local), (s_ray, doc_ray, remote, cmp_ray) = (
        runs["local"],
        runs["ray"],
    )
    assert cmp_ray.to_dict() == cmp_local.to_dict()
    assert cmp_ray.computed == cmp_local.computed == [("dialogue", 0), ("foal", 0)]
    assert doc_ray["groups"] == doc_local["groups"]
    assert doc_ray["counts"] == doc_local["counts"]
    cells = [("MRD", 0), ("MRD w/o MIC", 0), ("MRD", 1), ("MRD w/o MIC", 1)]
    assert remote.computed == local.computed == cells
    assert remote.to_dict() == local.to_dict()
    # ablation/models/<cell>/<role>.pt and compare/<cell>/pretrain/multi.pt
    models = sorted(s_local.run.root.glob("*/*/*/*.pt"))
    assert len(models) == 8 + 2
    for path in models:
        other = s_ray.run.root / path.relative_to(s_local.run.root)
        a, b = _weights(path), _weights(other)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The driver wrote every file; nothing is left half-written.
    assert not list(s_ray.run.root.rglob("*.tmp"))
    assert not list(s_ray.run.root.rglob(".pair.state.pt"))


TINY = {
    "model": {"hidden": 16},
    "pretrain": {"epochs": 1, "batch_size": 32},
    "partition": {"method": "in_sample"},
    "distill": {"epochs": 4, "batch_size": 32},
    "ablate": {"bootstrap": 20},
}


@pytest.mark.slow
def test_ray_ablation_killed_midway_reuses_the_finished_cells(tmp_path, ray_runtime):
    _killed_midway_reuses_the_finished_cells(tmp_path, "ray")


@pytest.mark.slow
def test_process_ablation_killed_midway_reuses_the_finished_cells_and_ends_its_workers(
    tmp_path,
):
    if not Path("/proc").is_dir():
        pytest.skip("finding the command's worker processes reads Linux's /proc")
    workers = _killed_midway_reuses_the_finished_cells(tmp_path, "processes")
    # The workers that were computing the other cells ended with the command.
    assert workers, "the command ran no worker process"
    deadline = time.monotonic() + 120  # generous: a busy machine
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, "a worker process outlived the command"
        time.sleep(0.1)


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _killed_midway_reuses_the_finished_cells(tmp_path, kind: str) -> set[int]:
    """Stops `mrd ablate --executor KIND` (SIGTERM) once its first cell is written, checks
    the finished cells are reused by a rerun with the same executor and that the result is
    a local run's; returns the command's child processes seen while it ran."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    cells_dir = run / "ablation" / "cells"
    args = ["--config", str(config), "--run-dir", str(run), "--device", "cpu", "--seeds", "2"]
    # The driver (with its own Ray runtime, or its own worker processes) is stopped
    # (SIGTERM) once its first cell is written: 1 of 4 cells are finished then.
    driver = subprocess.Popen(
        [sys.executable, "-m", "mrd_cli", "ablate", *args, "--without", "rcl", "--executor", kind],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    deadline = time.monotonic() + 300
    children: set[int] = set()
    while not list(cells_dir.glob("*.json")) and driver.poll() is None:
        assert time.monotonic() < deadline, "no cell was written in 5 minutes"
        if kind == "processes" and Path("/proc").is_dir():
            children |= _children(driver.pid)
        time.sleep(0.05)
    # 143 even when SIGTERM lands inside one of Ray's waits, which turn the handler's
    # Terminated into a plain KeyboardInterrupt (cli/common.py: was_terminated).
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 143, err.decode()[-2000:]
    finished = {p.name: p.stat().st_mtime_ns for p in cells_dir.glob("*.json")}
    assert 1 <= len(finished) < 4
    assert not (run / "ablation" / "results.json").exists()

    session = Session.open("synthetic", config, run_dir=run, device="cpu")
    executor = make_executor(kind, ExecutorConfig(), num_cpus=None if kind == "ray" else 2)
    again = ablate(session, [("rcl",)], seeds=2, executor=executor)
    assert len(again.computed) == 4 - len(finished)
    for name, mtime in finished.items():
        assert (cells_dir / name).stat().st_mtime_ns == mtime  # reused, not rewritten
    # The resumed study is the one a local run makes from scratch.
    local = Session.open("synthetic", config, run_dir=tmp_path / "local", device="cpu")
    assert again.to_dict() == ablate(local, [("rcl",)], seeds=2).to_dict()
    return children


@pytest.mark.slow
def test_ray_tune_workers_share_the_study_and_the_driver_writes_the_trials(
    tmp_path, toy_corpus, ray_runtime
):
    _tune_workers_share_the_study(tmp_path, toy_corpus, "ray")


@pytest.mark.slow
def test_process_tune_workers_share_the_study_and_the_driver_writes_the_trials(
    tmp_path, toy_corpus
):
    _tune_workers_share_the_study(tmp_path, toy_corpus, "processes")


def _tune_workers_share_the_study(tmp_path, toy_corpus, kind: str) -> None:
    pytest.importorskip("optuna")
    from mrd_cli.recipes.tune import parse_space, tune

    space = {"distill.alpha": {"float": [0.0, 2.0]}, "distill.lr": {"float": [1e-5, 1e-3]}}
    results = {}
    other = make_executor(kind, ExecutorConfig(), num_cpus=None if kind == "ray" else 2)
    for name, executor in (("local", None), ("ray", other)):
        session = _toy_session(tmp_path / name, toy_corpus)
        results[name] = tune(
            session,
            trials=4,
            space=parse_space(space, session.cfg),
            prune=False,
            poll_seconds=0.2,
            executor=executor,
        )
    local, remote = results["local"], results["ray"]
    assert remote.counts["complete"] == 4 and remote.ran_here == [0, 1, 2, 3]
    # The trials ran in the workers' processes (two, one per core), not in this one; each
    # trial's config depends only on the seed and its number, wherever it ran.
    workers = {r["number"]: r for r in remote.trials}
    here = f"{socket.gethostname()}:{os.getpid()}"
    assert all(_worker(tmp_path / "ray", n) != here for n in workers)
    for row in local.trials:
        assert workers[row["number"]]["params"] == row["params"]
        assert workers[row["number"]]["value"] == row["value"]
    for n in range(4):
        trial = tmp_path / "ray" / "tune" / "toy-text" / "trials" / str(n)
        assert (trial / "trial.yaml").is_file() and (trial / "seed0" / "text.pt").is_file()
    assert (tmp_path / "ray" / "tune" / "toy-text" / "best.yaml").is_file()


def _worker(root: Path, number: int) -> str:
    import optuna

    study = optuna.load_study(
        study_name="toy-text", storage=f"sqlite:///{root / 'tune' / 'study.db'}"
    )
    return study.trials[number].user_attrs["worker"]


@pytest.mark.slow
def test_run_with_processes_says_when_each_fold_model_ends(tmp_path):
    # Epoch bars cannot come from other processes: the command says what runs where and
    # when each unit ends, instead of going quiet for the whole partition.
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "partition": {"method": "cross_fit", "folds": 2}}))
    done = subprocess.run(
        [sys.executable, "-m", "mrd_cli", "run", "--config", str(config), "--device", "cpu"]
        + ["--run-dir", str(tmp_path / "run"), "--executor", "processes"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fold models of multi and text" in done.stderr
    for role in ("multi", "text"):
        for k in (1, 2):
            assert f"fold {k}/2 {role}: done" in done.stderr
    assert (tmp_path / "run" / "partition.json").is_file()

"""Per-epoch records of training: ``RUN/<step>/<role>.metrics.jsonl`` and optional loggers.

Every training step (pretrain, distill, selftrain) appends one JSON line per epoch and model
as the epoch ends, flushed to disk: epoch, the segment (``pretrain``, ``distill``,
``round 2``), the curriculum stage (distill), each mean loss term, the validation W-F1, the
best so far, and the epoch's wall time. A resumed run first drops the lines of the epochs it
redoes; a fresh run starts the file anew.

``tracking.loggers`` (``--log``) adds TensorBoard event files under ``RUN/tensorboard/
<step>/<role>`` and MLflow runs (one per step and role; params from the config, metrics per
epoch, the checkpoint and its card as artifacts) in a local SQLite store
``RUN/mlflow.db`` by default or at ``tracking.mlflow_uri``. Both come from optional extras
and are imported only when asked for.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_text

LOGGERS = ("tensorboard", "mlflow")
INSTALL = {
    "tensorboard": "pip install -e '.[tensorboard]'",
    "mlflow": "pip install -e '.[mlflow]'",
}


def metrics_path(directory: Path, role: str) -> Path:
    return Path(directory) / f"{role}.metrics.jsonl"


def append_line(path: Path, line: str) -> None:
    """Append one line in a single write, then flush it to disk (a crash loses at most the
    line being written, never an earlier one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file (a torn last line is skipped)."""
    out = []
    if not Path(path).is_file():
        return out
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class EpochRecorder:
    """Records each epoch of one training step for its models (see the module docstring).

    ``roles`` maps the trainer's model keys to roles (pretrain: ``{"model": "multi"}``).
    ``stage_of(epoch)`` names the curriculum stage of a 1-based epoch. ``first`` says that
    this segment starts the step: a run that begins at epoch 1 then clears the file.
    """

    def __init__(
        self,
        directory: Path,
        step: str,
        roles: dict[str, str],
        segment: str,
        first: bool = True,
        stage_of: Callable[[int], str] | None = None,
        loggers: list[Any] | None = None,
    ):
        self.directory = Path(directory)
        self.step = step
        self.roles = roles
        self.segment = segment
        self.first = first
        self.stage_of = stage_of
        self.loggers = loggers or []
        self.started = False
        self.t_last = time.perf_counter()

    def _start(self, epoch: int) -> None:
        """Drop what this run redoes: everything when it starts afresh, else this segment's
        lines from ``epoch`` on (a resumed run)."""
        for role in self.roles.values():
            path = metrics_path(self.directory, role)
            if not path.exists():
                continue
            fresh = epoch == 1 and self.first
            keep = [
                r
                for r in read_metrics(path)
                if not fresh and not (r.get("segment") == self.segment and r["epoch"] >= epoch)
            ]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
        self.started = True

    def record(self, log: Any) -> None:
        """One epoch's ``EpochLog`` (``core/training.py``)."""
        if not any(key in log.val_wf1 for key in self.roles):
            return  # an epoch without validation (self-training's contrastive phase)
        if not self.started:
            self._start(log.epoch)
        now = time.perf_counter()
        seconds, self.t_last = now - self.t_last, now
        for key, role in self.roles.items():
            if key not in log.val_wf1:
                continue
            row = {
                "epoch": log.epoch,
                "epochs": log.epochs,
                "step": self.step,
                "segment": self.segment,
                "stage": self.stage_of(log.epoch) if self.stage_of else self.segment,
                "losses": dict(log.losses),
                "val_weighted_f1": log.val_wf1[key],
                "best_val_weighted_f1": log.best_wf1.get(key),
                "seconds": round(seconds, 4),
                "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            append_line(metrics_path(self.directory, role), json.dumps(row))
            for logger in self.loggers:
                logger.epoch(role, row)

    def wrap(self, on_epoch: Callable[[Any], None] | None) -> Callable[[Any], None]:
        """An ``on_epoch`` callback that records, then calls ``on_epoch``."""

        def both(log: Any) -> None:
            self.record(log)
            if on_epoch is not None:
                on_epoch(log)

        return both

    def keyed(self, on_event: Callable[[Any], None] | None, prefix: str) -> Callable[[Any], None]:
        """An ``on_event`` callable (``core.events``; self-training's epochs come with task
        ``"multi round 2"``) that records each epoch, each round as its own segment
        (``"round 2"``), then passes every event on to ``on_event``."""

        def call(event: Any) -> None:
            if event.kind == "epoch" and event.log is not None:
                segment = event.task.removeprefix(prefix)
                if segment != self.segment:
                    self.segment, self.first, self.started = segment, segment == "round 0", False
                self.record(event.log)
            if on_event is not None:
                on_event(event)

        return call

    def finish(self, checkpoints: dict[str, Path]) -> None:
        """The step wrote ``checkpoints`` (role -> path): hand them to the loggers, close."""
        for logger in self.loggers:
            logger.finish(checkpoints)


def open_loggers(session: Any, step: str, roles: list[str]) -> list[Any]:
    """The loggers ``tracking.loggers`` asks for, for ``step`` and its roles."""
    wanted = list(session.cfg.tracking.loggers)
    out: list[Any] = []
    for name in wanted:
        if name == "tensorboard":
            out.append(TensorBoardLogger(session.run.root / "tensorboard" / step, roles))
        elif name == "mlflow":
            out.append(MLflowLogger(session, step, roles))
    return out


def recorder(
    session: Any,
    step: str,
    roles: dict[str, str],
    segment: str | None = None,
    first: bool = True,
    stage_of: Callable[[int], str] | None = None,
    directory: Path | None = None,
    loggers: bool = True,
) -> EpochRecorder:
    """The ``EpochRecorder`` of ``step`` in ``session``'s run directory (``directory``
    overrides where the metrics files go; ``loggers=False``: the files only)."""
    return EpochRecorder(
        directory or session.run.root / step,
        step,
        roles,
        segment or step,
        first,
        stage_of,
        open_loggers(session, step, sorted(set(roles.values()))) if loggers else [],
    )


def _require(name: str, module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MRDError(
            f"--log {name} needs the optional extra '{name}': run `{INSTALL[name]}`."
        ) from None


class TensorBoardLogger:
    """Scalars ``loss/<term>``, ``val/weighted_f1`` per epoch, one event folder per role."""

    def __init__(self, directory: Path, roles: list[str]):
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writers = {r: SummaryWriter(log_dir=str(directory / r)) for r in roles}

    def epoch(self, role: str, row: dict[str, Any]) -> None:
        writer = self.writers[role]
        # Self-training's rounds each count epochs from 1: one series per round.
        tag = "" if row["segment"] == row["step"] else f"{row['segment'].replace(' ', '_')}/"
        epoch = row["epoch"]
        for term, value in row["losses"].items():
            writer.add_scalar(f"{tag}loss/{term}", value, epoch)
        writer.add_scalar(f"{tag}val/weighted_f1", row["val_weighted_f1"], epoch)
        writer.flush()

    def finish(self, checkpoints: dict[str, Path]) -> None:
        for writer in self.writers.values():
            writer.close()


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys -> text (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, name + "."))
        else:
            out[name] = json.dumps(value) if not isinstance(value, str) else value
    return out


class MLflowLogger:
    """One MLflow run per step and role in the store of ``tracking.mlflow_uri`` (default a
    SQLite file in the run directory, artifacts beside it)."""

    def __init__(self, session: Any, step: str, roles: list[str]):
        _require("mlflow", "mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        tracking = session.cfg.tracking
        root = Path(session.run.root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        uri = tracking.mlflow_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        name = tracking.mlflow_experiment or f"mrd-{session.corpus.name}"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment = found.experiment_id
        else:
            where = None if tracking.mlflow_uri else (root / "mlflow-artifacts").as_uri()
            experiment = self.client.create_experiment(name, artifact_location=where)
        params = [Param(k, v[:6000]) for k, v in flat_params(session.cfg.to_dict()).items()]
        self.runs: dict[str, str] = {}
        for role in roles:
            run = self.client.create_run(
                experiment,
                run_name=f"{step}/{role}",
                tags={"mrd.step": step, "mrd.role": role, "mrd.run_dir": str(root)},
            )
            self.runs[role] = run.info.run_id
            for i in range(0, len(params), 100):
                self.client.log_batch(run.info.run_id, params=params[i : i + 100])

    def epoch(self, role: str, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        prefix = "" if row["segment"] == row["step"] else f"{row['segment'].replace(' ', '_')}."
        values = {f"loss.{k}": v for k, v in row["losses"].items()}
        values["val_weighted_f1"] = row["val_weighted_f1"]
        metrics = [Metric(prefix + k, float(v), stamp, row["epoch"]) for k, v in values.items()]
        self.client.log_batch(self.runs[role], metrics=metrics)

    def finish(self, checkpoints: dict[str, Path]) -> None:
        from mrd_cli.core.card import card_path

        for role, run_id in self.runs.items():
            path = checkpoints.get(role)
            if path is not None and Path(path).is_file():
                self.client.log_artifact(run_id, str(path))
                if card_path(path).is_file():
                    self.client.log_artifact(run_id, str(card_path(path)))
            self.client.set_terminated(run_id)

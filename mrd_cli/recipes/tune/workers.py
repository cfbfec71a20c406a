"""Processes working on one study: each takes trials until the study holds enough.

``run_trials`` is one process's share: it starts a trial only while finished + running
trials are fewer than ``job.trials`` and waits for the others' last trials otherwise; a
trial that finds ``job.trials`` trials numbered before it ends at once without a config
(``_Surplus``, a rare race between processes; it is marked ``surplus`` and left out of
every listing); a trial interrupted by Ctrl-C is marked and queued again with the same
config, and one whose process died is failed by the heartbeat and queued again
(``open_study``). ``tune_worker`` runs ``run_trials`` as a unit of an executor (a Ray task
or a worker process) in a temporary run directory, returning its trial files as bytes.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrd_cli.config import Config
from mrd_cli.core.device import resolve_device, set_threads
from mrd_cli.core.events import OnEvent, emit
from mrd_cli.core.rundir import unpack
from mrd_cli.core.session import Session
from mrd_cli.data.corpus import Corpus
from mrd_cli.errors import MRDRunError
from mrd_cli.recipes.tune.study import (
    FINISHED,
    StudyJob,
    counts,
    open_study,
    require_optuna,
)
from mrd_cli.recipes.tune.summary import row
from mrd_cli.recipes.tune.trial import run_trial

if TYPE_CHECKING:  # optuna is an optional extra, imported only when a study runs
    import optuna

# A trial that fails (a non-finite loss, say) is recorded and the study goes on; this many
# failures in a row stop it.
MAX_FAILURES = 5


class _Surplus(Exception):
    """A trial started after the study already had its trials (two processes raced)."""


def run_trials(
    session: Session,
    study: optuna.Study,
    job: StudyJob,
    study_dir: Path,
    optuna: Any,
    on_event: OnEvent | None = None,
) -> list[int]:
    """This process's share of the study: start trials (into ``study_dir``) until the study
    holds ``job.trials`` finished ones; the numbers of the trials run here."""
    ran_here: list[int] = []
    T = optuna.trial.TrialState

    def objective(trial: optuna.Trial) -> float:
        ahead = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.number < trial.number
            and t.state.name in (*FINISHED, "RUNNING", "WAITING")
            and not t.user_attrs.get("surplus")
        ]
        if len(ahead) >= job.trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = {key: p.suggest(trial) for key, p in job.space.items()}
        try:
            return run_trial(session, trial, params, job, study_dir, optuna, on_event)
        except MRDRunError as exc:  # e.g. a non-finite loss: this config fails, not the study
            trial.set_user_attr("error", str(exc))
            raise
        except KeyboardInterrupt:
            # Queue the interrupted config again so the next run starts with it.
            trial.set_user_attr("interrupted", True)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise

    failures: list[str] = []  # consecutive failed trials of this process
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        tally = counts(study)
        if tally["finished"] >= job.trials:
            break
        if tally["finished"] + tally["running"] >= job.trials and tally["waiting"] == 0:
            emit(on_event, "wait", payload={"counts": tally})
            time.sleep(job.poll_seconds)
            continue
        done: list[Any] = []
        study.optimize(
            objective,
            n_trials=1,
            catch=(_Surplus, MRDRunError),
            callbacks=[lambda _study, frozen, done=done: done.append(frozen)],
        )
        for frozen in done:
            if frozen.user_attrs.get("surplus"):
                continue
            ran_here.append(frozen.number)
            emit(on_event, "trial", payload={"row": row(frozen, T), "counts": counts(study)})
            if frozen.state == T.FAIL:
                failures.append(frozen.user_attrs.get("error", "failed"))
                if len(failures) >= MAX_FAILURES:
                    raise MRDRunError(
                        f"{MAX_FAILURES} trials in a row failed; the last: {failures[-1]}"
                    )
            else:
                failures.clear()
    return ran_here


@dataclass(frozen=True)
class TuneWorker:
    """One worker of a study as a unit of work: the config, the study, its device, its index."""

    cfg: Config
    job: StudyJob
    device: str
    index: int


def tune_worker(unit: TuneWorker, corpus: Corpus, base: dict[str, bytes]) -> dict[str, Any]:
    """``run_trials`` wherever the executor puts it, against the study's storage (which the
    worker must reach), in a temporary run directory holding the pretrained pair and
    partition (``base``, ``RunDir.distill_inputs``; empty when each trial pretrains its own): the numbers of the trials it ran and its trial directories' files as
    bytes, by their path under the study directory. Writes nothing in the run directory."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    set_threads(unit.cfg.threads)
    job = unit.job
    with tempfile.TemporaryDirectory(prefix="mrd-tune-") as tmp:
        run = unpack(Path(tmp) / "run", base)
        session = Session(unit.cfg, corpus, run, resolve_device(unit.device))
        study = open_study(optuna, job)
        study_dir = Path(tmp) / "study"
        ran = run_trials(session, study, job, study_dir, optuna)
        files = {
            str(path.relative_to(study_dir)): path.read_bytes()
            for path in sorted(study_dir.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        }
    return {"ran": ran, "files": files}

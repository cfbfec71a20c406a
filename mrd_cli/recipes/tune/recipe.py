"""Recipe: hyperparameter search on validation W-F1 with Optuna (`mrd tune`).

``tune`` checks its inputs, makes sure (one process at a time) that the run directory's
pretrained pair and partition are current and opens the study, then runs trials here
(``workers.run_trials``) or in an executor's workers (``workers.tune_worker``), and writes
the summary (``summary.summarise``). The package's docstring describes the study.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mrd_cli.config.sections import MAX_SEEDS
from mrd_cli.core import lock as run_lock
from mrd_cli.core.events import OnEvent
from mrd_cli.core.executor import Executor, LocalExecutor
from mrd_cli.core.session import Session
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_bytes
from mrd_cli.recipes.partition import ensure_partitioned
from mrd_cli.recipes.tune.space import Param, load_space, needs_pretraining
from mrd_cli.recipes.tune.study import (
    StudyJob,
    default_storage,
    default_study_name,
    open_storage,
    open_study,
    require_optuna,
    study_directory,
    study_meta,
)
from mrd_cli.recipes.tune.summary import TuneResult, summarise
from mrd_cli.recipes.tune.trial import pretrained_score
from mrd_cli.recipes.tune.workers import TuneWorker, run_trials, tune_worker

TARGETS = ("text", "multi", "both")
# A sane bound on the trials one study may be asked for (each is a distillation run).
MAX_TRIALS = 100_000


def tune(
    session: Session,
    *,
    trials: int = 20,
    seeds: int = 1,
    target: str = "text",
    space: dict[str, Param] | Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    prune: bool = True,
    prune_startup: int = 5,
    prune_warmup: int = 1,
    heartbeat_interval: int = 10,
    grace_period: int | None = 60,
    poll_seconds: float = 5.0,
    on_event: OnEvent | None = None,
    executor: Executor | None = None,
) -> TuneResult:
    """Run (or continue) the study until it holds ``trials`` finished trials; write
    ``RUN/tune/<study>/best.yaml``; return every trial, the best and the parameter importances.

    ``on_event`` gets the events of pretraining and of each trial's distillation (task
    "trial 3, seed 0"), a ``trial`` event (payload: row, counts) for each trial this
    process finishes and a ``wait`` event (payload: counts) for each poll while the last
    trials run in other processes. ``executor`` (default: this
    process) runs the trials: a Ray executor runs one worker per task slot
    (``Executor.slots``, at most ``trials``), each trying trials against the shared storage; the callbacks
    then follow only the pretraining.
    """
    optuna = require_optuna()
    if target not in TARGETS:
        raise MRDError(f"Unknown target '{target}'; use one of {', '.join(TARGETS)}.")
    if not (1 <= trials <= MAX_TRIALS and 1 <= seeds <= MAX_SEEDS):
        raise MRDError(
            f"--trials must be in [1, {MAX_TRIALS}] and --seeds in [1, {MAX_SEEDS}], got "
            f"{trials} and {seeds}."
        )
    cfg = session.cfg
    if not isinstance(space, dict):
        space = load_space(space, cfg)
    seed_list = [cfg.seed + i for i in range(seeds)]
    url = storage or default_storage(session)
    name = study_name or default_study_name(session, target)
    study_dir = study_directory(session, name)
    study_dir.mkdir(parents=True, exist_ok=True)
    own_pairs = needs_pretraining(space)
    epoch_param = space.get("distill.epochs")
    job = StudyJob(
        url=url,
        name=name,
        seed=cfg.seed,
        meta={},
        trials=trials,
        space=space,
        seed_list=seed_list,
        target=target,
        stride=max(epoch_param.probes()) if epoch_param is not None else cfg.distill.epochs,
        own_pairs=own_pairs,
        prune=prune,
        prune_startup=prune_startup,
        prune_warmup=prune_warmup,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        poll_seconds=poll_seconds,
    )

    # One process at a time prepares the pair and opens the study (two processes started
    # together would otherwise pretrain the same files and create the same tables): the
    # others wait for ``RUN/tune/.prepare``'s lock. The run-directory lock is held only
    # while the pair is prepared: the trials write nothing but their own directories, and
    # check the pair before each run. Then the study holds the run directory shared until
    # it ends (other `mrd tune` processes may join): `mrd pretrain` / `mrd partition` are
    # refused meanwhile, so the pair its trials distil cannot be replaced under them.
    with run_lock.held(session.run.root / "tune" / ".prepare", "mrd tune", wait=True):
        # An unusable storage (a URL that does not parse, a missing driver, a server that
        # cannot be reached) is an error now, before pretraining and the partition run.
        open_storage(optuna, job)
        pretrained_value = None
        if not run_lock.acquire(session.run.root, "mrd tune", allow_shared=True):
            raise MRDError(
                f"The run directory {session.run.root} cannot be written. Pass --run-dir "
                "with a directory you can write to."
            )
        try:
            if not own_pairs:
                ensure_partitioned(session, on_event=on_event)
            run_lock.acquire_shared(session.run.root, "mrd tune")
        finally:
            run_lock.release(session.run.root)
        if not own_pairs:
            pretrained_value = pretrained_score(session, target)
        job = replace(job, meta=study_meta(session, space, seed_list, target, own_pairs))
        study = open_study(optuna, job)

    executor = executor or LocalExecutor()
    if executor.in_process:
        ran_here = run_trials(session, study, job, study_dir, optuna, on_event)
    else:
        # Each worker is a unit of the executor running trials against the shared storage;
        # its trial directories come back as bytes and are written here alone.
        units = [
            TuneWorker(session.cfg, job, executor.device(str(session.device)), k)
            for k in range(min(executor.slots(), trials))
        ]
        base = {} if own_pairs else session.run.distill_inputs()
        ran_here = []
        for _, out in executor.map(tune_worker, units, session.corpus, base):
            for rel, data in out["files"].items():
                atomic_write_bytes(study_dir / rel, data)
            ran_here += out["ran"]
        ran_here.sort()
    # (On an error the CLI's handle_errors drops it with every lock this process holds.)
    run_lock.release_shared(session.run.root)
    return summarise(
        session, study, job, ran_here, study_dir, optuna, pretrained_value=pretrained_value
    )

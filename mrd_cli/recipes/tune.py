"""Recipe: hyperparameter search on validation W-F1 with Optuna (`mrd tune`).

The study first makes sure the pretrained pair and the partition in the run directory are
current (``ensure_partitioned``, as ``mrd run`` does); then each trial distils that pair with
the trial's config, once per seed, into ``RUN/tune/<study>/trials/<n>/seed<s>/``. A trial's value is
the mean over seeds of the validation W-F1 of the target model(s) at their selected epochs
(``both``: the mean of the two models). Test labels are never read: the test split is not
even turned into tensors.

Search: TPE, seeded per trial from the config seed and the trial number (so that processes
sharing a study draw different configs, and a study is reproducible from its seed). Pruning:
``MedianPruner`` on the per-epoch validation W-F1 of the target, reported at step
``seed_index * stride + epoch - 1``, where ``stride`` is the largest number of distillation
epochs the space allows; a step therefore compares the same seed at the same epoch across
trials, and later seeds come after earlier ones.

Storage: an Optuna RDB storage (default ``sqlite:///RUN/tune/study.db``). ``trials`` is the
number of finished (complete or pruned) trials the study should hold in total, however many
processes work on it: a process starts a trial only while finished + running trials are
fewer, waits for the others' last trials otherwise, and a trial that finds ``trials`` trials
numbered before it ends at once without a config (a rare race between processes; it is
marked ``surplus`` and left out of every listing). A trial interrupted by Ctrl-C is marked
failed and queued again with the same config; a trial whose process died is failed by the
heartbeat after ``grace_period`` seconds and queued again the same way.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import socket
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mrd_cli.config import (
    Config,
    builtin_config_path,
    describe_type,
    key_type,
    model_in_use,
    nested_overrides,
    read_yaml,
    value_fits,
    with_values,
)
from mrd_cli.core import lock as run_lock
from mrd_cli.core.device import resolve_device, set_threads
from mrd_cli.core.executor import Executor, LocalExecutor
from mrd_cli.core.rundir import ROLES, RunDir, unpack
from mrd_cli.core.session import Session, signature
from mrd_cli.core.training import EpochLog, evaluate
from mrd_cli.data.corpus import Corpus
from mrd_cli.errors import MRDError, MRDRunError
from mrd_cli.io import atomic_write_bytes, atomic_write_json, atomic_write_text, file_sha256
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.partition import ensure_partitioned
from mrd_cli.safetext import mask_credentials

if TYPE_CHECKING:  # optuna is an optional extra, imported only when a study runs
    import optuna

TARGETS = ("text", "multi", "both")
KINDS = ("float", "int", "choice")
INSTALL_HINT = "pip install -e '.[tune]'"
# Sections a trial may change only by pretraining its own pair.
PRETRAIN_SECTIONS = ("model", "pretrain", "partition")
# The config sections a trial's result depends on (the study's base config).
TRIAL_SECTIONS = ("seed", "dataset", "model", "pretrain", "partition", "distill")
REFUSED = {
    "dataset": "the data are loaded once for the whole study",
    "seed": "the seeds are set by --seed and --seeds",
    "ablate": "ablation settings play no part in a trial",
    "executor": "where the work runs plays no part in a trial",
}
FINISHED = ("COMPLETE", "PRUNED")
# A trial that fails (a non-finite loss, say) is recorded and the study goes on; this many
# failures in a row stop it.
MAX_FAILURES = 5


def require_optuna() -> Any:
    """The optuna module, or a user error naming the extra to install."""
    try:
        import optuna
    except ImportError:
        raise MRDError(f"mrd tune needs Optuna, an optional extra: {INSTALL_HINT}") from None
    return optuna


# --------------------------------------------------------------------------------------
# The search space


@dataclass(frozen=True)
class Param:
    """One tuned key and its distribution."""

    key: str
    kind: str  # float, int or choice
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(
                self.key, self.low, self.high, log=self.log, step=self.step or 1
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def probes(self) -> list[Any]:
        """The values whose configs must validate: both ends of a range, every choice."""
        return [self.low, self.high] if self.kind != "choice" else list(self.choices)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        out: dict[str, Any] = {self.kind: [self.low, self.high]}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def default_space_path() -> Path:
    return builtin_config_path("tune_space")


def load_space(path: Path | None, cfg: Config) -> dict[str, Param]:
    """Read and check a search space file (the built-in one when ``path`` is None)."""
    path = Path(path) if path is not None else default_space_path()
    if not path.is_file():
        raise MRDError(f"Search space file not found: {path}. Check the path given to --space.")
    data = read_yaml(path)
    if not data:
        raise MRDError(f"Search space {path} is empty; give at least one key to tune.")
    return parse_space(data, cfg, where=str(path))


def parse_space(
    data: dict[str, Any], cfg: Config, where: str = "the search space"
) -> dict[str, Param]:
    """Check a search space mapping (dotted key -> distribution) against ``cfg``."""
    space: dict[str, Param] = {}
    for key, spec in data.items():
        try:
            space[str(key)] = _parse_param(str(key), spec, cfg)
        except MRDError as exc:
            raise MRDError(f"In {where}: {exc}") from None
    # Each range's ends, together, must still give valid configs (e.g. stage fractions
    # whose lower ends are all 0 would sum to 0).
    for pick in (0, -1):
        try:
            with_values(cfg, {k: p.probes()[pick] for k, p in space.items()})
        except MRDError as exc:
            ends = "lower" if pick == 0 else "upper"
            raise MRDError(f"In {where}: the {ends} ends of the ranges together: {exc}") from None
    return space


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse_param(key: str, spec: Any, cfg: Config) -> Param:
    section = key.split(".")[0]
    if section in REFUSED:
        raise MRDError(f"'{key}' cannot be tuned: {REFUSED[section]}.")
    annotation = key_type(cfg, key)  # unknown key -> closest key suggested
    if not isinstance(spec, dict):
        raise MRDError(
            f"'{key}' must map to a distribution such as {{float: [low, high]}}, "
            f"{{int: [low, high]}} or {{choice: [a, b]}}, got {spec!r}."
        )
    kinds = [k for k in spec if k in KINDS]
    extra = [k for k in spec if k not in (*KINDS, "log", "step")]
    if extra or len(kinds) != 1:
        bad = extra[0] if extra else ", ".join(map(str, kinds)) or "none"
        raise MRDError(
            f"'{key}': unknown or missing distribution ({bad}); give exactly one of "
            "float, int or choice (with log or step where they apply)."
        )
    kind = kinds[0]
    args = spec[kind]
    log = spec.get("log", False)
    step = spec.get("step")
    if not isinstance(log, bool):
        raise MRDError(f"'{key}': log must be true or false, got {log!r}.")
    if kind == "choice":
        if log or step is not None:
            raise MRDError(f"'{key}': log and step apply to float and int ranges, not choice.")
        if not isinstance(args, list) or not args:
            raise MRDError(f"'{key}': choice needs a non-empty list of values, got {args!r}.")
        for value in args:
            if not (value is None or isinstance(value, (bool, int, float, str))):
                raise MRDError(
                    f"'{key}': choice values must be numbers, strings or true/false, got {value!r}."
                )
            if not value_fits(value, annotation):
                raise MRDError(
                    f"'{key}' must be {describe_type(annotation)}; the choice {value!r} is not."
                )
        if len(set(map(repr, args))) != len(args):
            raise MRDError(f"'{key}': choice lists a value twice: {args!r}.")
        param = Param(key, kind, choices=tuple(args))
    else:
        if not (isinstance(args, list) and len(args) == 2 and all(map(_is_number, args))):
            raise MRDError(f"'{key}': {kind} needs [low, high], two finite numbers, got {args!r}.")
        low, high = args
        if kind == "int":
            if not all(isinstance(x, int) for x in args):
                raise MRDError(f"'{key}': int needs whole numbers [low, high], got {args!r}.")
            if not value_fits(low, annotation):
                raise MRDError(
                    f"'{key}' must be {describe_type(annotation)}; an int range cannot set it."
                )
        else:
            low, high = float(low), float(high)
            if not value_fits(low, annotation):
                use = "; use {int: [low, high]}" if annotation is int else ""
                raise MRDError(
                    f"'{key}' must be {describe_type(annotation)}; a float range cannot set it{use}."
                )
        if not low < high:
            raise MRDError(
                f"'{key}': the range [{args[0]}, {args[1]}] is empty or inverted; low must be "
                "below high (set a fixed value in --config instead)."
            )
        if log and low <= 0:
            raise MRDError(f"'{key}': a log range needs low > 0, got {args[0]}.")
        if step is not None:
            if not _is_number(step) or step <= 0 or (kind == "int" and not isinstance(step, int)):
                raise MRDError(f"'{key}': step must be a positive {kind}, got {step!r}.")
            if log:
                raise MRDError(f"'{key}': step and log cannot be combined.")
        param = Param(key, kind, low=low, high=high, log=log, step=step)
    for value in param.probes():
        try:
            with_values(cfg, {key: value})
        except MRDError as exc:
            raise MRDError(f"'{key}' = {value!r} gives an invalid config: {exc}") from None
    return param


def needs_pretraining(space: dict[str, Param]) -> bool:
    """Whether a trial changes what the pretrained pair or the partition depend on."""
    return any(k.split(".")[0] in PRETRAIN_SECTIONS for k in space)


# --------------------------------------------------------------------------------------
# The result


@dataclass
class TuneResult:
    """The study after this call: every trial (best first), the best config, importances."""

    dataset: str
    study: str
    storage: str
    target: str
    seeds: list[int]
    trials_requested: int
    counts: dict[str, int]
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    best_config: Path | None
    importances: dict[str, float] | None
    importance_note: str | None
    pretrained_value: float | None = None
    epochs_run: int = 0
    epochs_planned: int = 0
    ran_here: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "study": self.study,
            "storage": self.storage,
            "target": self.target,
            "seeds": self.seeds,
            "trials_requested": self.trials_requested,
            "counts": self.counts,
            "pretrained_value": self.pretrained_value,
            "best": self.best,
            "best_config": str(self.best_config) if self.best_config else None,
            "importances": self.importances,
            "importance_note": self.importance_note,
            "epochs_run": self.epochs_run,
            "epochs_planned": self.epochs_planned,
            "trials": self.trials,
        }


# --------------------------------------------------------------------------------------
# The study


class _Surplus(Exception):
    """A trial started after the study already had its trials (two processes raced)."""


# Bounds of the CLI-only sizes (beyond them a study never ends or a seed list fills memory).
MAX_TRIALS = 100_000
MAX_SEEDS = 1_000


def default_storage(session: Session) -> str:
    return f"sqlite:///{(session.run.root / 'tune' / 'study.db').resolve()}"


def study_directory(session: Session, name: str) -> Path:
    """``RUN/tune/<study>/``: the study's trial directories, best.yaml and results.json
    (one directory per study, so that studies sharing a run directory never mix trials)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"
    return session.run.root / "tune" / safe


def default_study_name(session: Session, target: str) -> str:
    return f"{session.corpus.name}-{target}"


def masked(url: str) -> str:
    """A storage URL without its password (safe to print and to write into results),
    whether it parses or not (``safetext.mask_credentials``)."""
    return mask_credentials(url)


def target_value(values: dict[str, float], target: str) -> float:
    """The objective's W-F1 from each model's W-F1: one model's, or the mean of both."""
    if target == "both":
        return sum(values[r] for r in ROLES) / len(ROLES)
    return values[target]


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
    on_epoch: Callable[[str, EpochLog], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    on_trial: Callable[[dict[str, Any], dict[str, int]], None] | None = None,
    on_wait: Callable[[dict[str, int]], None] | None = None,
    executor: Executor | None = None,
) -> TuneResult:
    """Run (or continue) the study until it holds ``trials`` finished trials; write
    ``RUN/tune/<study>/best.yaml``; return every trial, the best and the parameter importances.

    ``on_epoch(key, log)`` follows pretraining and each trial's distillation epochs,
    ``on_trial(row, counts)`` each trial this process finishes, ``on_wait(counts)`` each
    poll while the last trials run in other processes. ``executor`` (default: this
    process) runs the trials: a Ray executor runs one worker per task slot
    (``Executor.slots``, at most ``trials``), each trying trials against the shared storage; the callbacks
    then follow only the pretraining.
    """
    optuna = require_optuna()
    if target not in TARGETS:
        raise MRDError(f"Unknown target '{target}'; use one of {', '.join(TARGETS)}.")
    if not (1 <= trials <= MAX_TRIALS and 1 <= seeds <= MAX_SEEDS):
        raise MRDError(
            f"--trials must be between 1 and {MAX_TRIALS} and --seeds between 1 and "
            f"{MAX_SEEDS} (got {trials} and {seeds})."
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

    # One process at a time prepares the pair and opens the study (two processes started
    # together would otherwise pretrain the same files and create the same tables).
    # The run-directory lock (core/lock.py) is held only while the pair is prepared: the
    # trials write nothing but their own directories, and check the pair before each run.
    with _file_lock(session.run.root / "tune" / ".prepare.lock"):
        # An unusable storage (a URL that does not parse, a missing driver, a server that
        # cannot be reached) is an error now, before pretraining and the partition run.
        _storage(optuna, url, heartbeat_interval, grace_period)
        if not own_pairs:
            if not run_lock.acquire(session.run.root, "mrd tune"):
                raise MRDError(
                    f"The run directory {session.run.root} cannot be written. Pass --run-dir "
                    "with a directory you can write to."
                )
            try:
                ensure_partitioned(session, on_epoch=on_epoch, on_step=on_step)
            finally:
                run_lock.release(session.run.root)
            pretrained_value = _pretrained_value(session, target)
        else:
            pretrained_value = None
        meta = _study_meta(session, space, seed_list, target, own_pairs)
        study = _open_study(
            optuna,
            url,
            name,
            meta,
            cfg.seed,
            prune,
            prune_startup,
            prune_warmup,
            heartbeat_interval,
            grace_period,
        )

    epoch_param = space.get("distill.epochs")
    job = StudyJob(
        url=url,
        name=name,
        meta=meta,
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
    executor = executor or LocalExecutor()
    if executor.in_process:
        ran_here = run_trials(
            session, study, job, study_dir, optuna, on_epoch, on_step, on_trial, on_wait
        )
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

    return _summarise(
        session,
        study,
        url,
        name,
        target,
        seed_list,
        trials,
        space,
        ran_here,
        study_dir,
        optuna,
        pretrained_value=pretrained_value,
    )


@dataclass(frozen=True)
class StudyJob:
    """What every process working on a study shares: where the study is, what it must
    match (``meta``), how many trials it should hold, the space, seeds and target, and the
    pruning and heartbeat settings."""

    url: str
    name: str
    meta: dict[str, Any]
    trials: int
    space: dict[str, Param]
    seed_list: list[int]
    target: str
    stride: int
    own_pairs: bool
    prune: bool
    prune_startup: int
    prune_warmup: int
    heartbeat_interval: int
    grace_period: int | None
    poll_seconds: float


def run_trials(
    session: Session,
    study: optuna.Study,
    job: StudyJob,
    study_dir: Path,
    optuna: Any,
    on_epoch: Callable[[str, EpochLog], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    on_trial: Callable[[dict[str, Any], dict[str, int]], None] | None = None,
    on_wait: Callable[[dict[str, int]], None] | None = None,
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
            return _run_trial(
                session,
                trial,
                params,
                job.space,
                job.seed_list,
                job.target,
                job.stride,
                study_dir,
                job.own_pairs,
                job.prune,
                on_epoch,
                on_step,
                optuna,
                job.meta.get("pretrained_pair"),
            )
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
        counts = _counts(study)
        if counts["finished"] >= job.trials:
            break
        if counts["finished"] + counts["running"] >= job.trials and counts["waiting"] == 0:
            if on_wait:
                on_wait(counts)
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
            if on_trial:
                on_trial(_row(frozen, T), _counts(study))
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
        study = _open_study(
            optuna,
            job.url,
            job.name,
            job.meta,
            unit.cfg.seed,
            job.prune,
            job.prune_startup,
            job.prune_warmup,
            job.heartbeat_interval,
            job.grace_period,
        )
        study_dir = Path(tmp) / "study"
        ran = run_trials(session, study, job, study_dir, optuna)
        files = {
            str(path.relative_to(study_dir)): path.read_bytes()
            for path in sorted(study_dir.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        }
    return {"ran": ran, "files": files}


def _run_trial(
    session: Session,
    trial: optuna.Trial,
    params: dict[str, Any],
    space: dict[str, Param],
    seed_list: list[int],
    target: str,
    stride: int,
    study_dir: Path,
    own_pairs: bool,
    prune: bool,
    on_epoch: Callable[[str, EpochLog], None] | None,
    on_step: Callable[[str], None] | None,
    optuna: Any,
    study_pair: list[str] | None = None,
) -> float:
    """Distil the pair with the trial's config over every seed; the mean over seeds of the
    target's validation W-F1 at each model's best distillation epoch."""
    cfg = with_values(session.cfg, params)  # the normal config validation
    trial_dir = study_dir / "trials" / str(trial.number)
    atomic_write_text(
        trial_dir / "trial.yaml",
        f"# mrd tune, trial {trial.number}: the tuned keys, as overrides for --config\n"
        + yaml.safe_dump(nested_overrides(session.cfg, params), sort_keys=False),
    )
    base = session.run
    if not own_pairs:
        pair = [file_sha256(session.run.pretrained(r)) for r in ROLES]
        if pair != study_pair:
            raise MRDError(
                f"The pretrained pair in {session.run.root} is not the one this study started "
                "from (another command rewrote it); give --study NAME for a new study."
            )
    if own_pairs:  # a trial that changes pretraining keys pretrains its own pair
        base = RunDir(trial_dir / "base")
        ensure_partitioned(
            session.derive(copy.deepcopy(cfg), base), on_epoch=on_epoch, on_step=on_step
        )
    planned = len(seed_list) * cfg.distill.epochs
    trial.set_user_attr("epochs_planned", planned)
    state = {"epochs": 0}
    values: list[float] = []
    best: dict[str, float] = {}
    for index, seed in enumerate(seed_list):
        seed_cfg = copy.deepcopy(cfg)
        seed_cfg.seed = seed
        out_dir = trial_dir / f"seed{seed}"
        key = f"trial {trial.number}, seed {seed}"

        best.clear()

        def report(log: EpochLog, index: int = index, key: str = key, seed: int = seed) -> None:
            for role, wf1 in log.val_wf1.items():
                best[role] = max(best.get(role, wf1), wf1)
            state["epochs"] += 1
            trial.set_user_attr("epochs_run", state["epochs"])
            if on_epoch:
                on_epoch(key, log)
            trial.report(target_value(log.val_wf1, target), index * stride + log.epoch - 1)
            # Pruning at the very last epoch would save nothing and lose the trial's value.
            last = index == len(seed_list) - 1 and log.epoch == log.epochs
            if prune and not last and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at seed {seed}, epoch {log.epoch}")

        try:
            distill(session.derive(seed_cfg, base), on_epoch=report, out_dir=out_dir)
        finally:
            (out_dir / ".pair.state.pt").unlink(missing_ok=True)
        # Each model's best distillation epoch, whether or not it beat the pretrained
        # weights (``keep_start``): trials that do not beat the start still differ.
        values.append(target_value(best, target))
        trial.set_user_attr("seed_values", values)
    return sum(values) / len(values)


def _pretrained_value(session: Session, target: str) -> float:
    """The pretrained pair's validation W-F1 of the target: the bar a trial should beat."""
    val = session.tensors("val")
    wf1 = {}
    for role in ROLES:
        model, _ = session.load_model(session.run.pretrained(role), "mrd pretrain")
        wf1[role] = evaluate(model, val, session.corpus.label_names)["weighted_f1"]
    return target_value(wf1, target)


def _storage(
    optuna: Any, url: str, heartbeat_interval: int, grace_period: int | None
) -> optuna.storages.RDBStorage:
    """The study storage at ``url``, or a user error whose message masks its password."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3
                ),
            )
    except Exception as exc:  # bad URL, missing driver, unreachable server
        # The library's message may quote the URL, password included: masked too.
        first = (str(exc).strip().splitlines() or [""])[0]
        raise MRDError(
            f"Cannot open the study storage {masked(url)}: {type(exc).__name__}: "
            f"{mask_credentials(first)}. Check --storage (an SQLAlchemy URL such as "
            "sqlite:///path/study.db or postgresql://user:password@host/db)."
        ) from None


def _open_study(
    optuna: Any,
    url: str,
    name: str,
    meta: dict[str, Any],
    seed: int,
    prune: bool,
    prune_startup: int,
    prune_warmup: int,
    heartbeat_interval: int,
    grace_period: int | None,
) -> optuna.Study:
    store = _storage(optuna, url, heartbeat_interval, grace_period)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=prune_warmup)
        if prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=store,
        study_name=name,
        direction="maximize",
        sampler=per_trial_tpe(optuna, seed),
        pruner=pruner,
        load_if_exists=True,
    )
    stored = study.user_attrs.get("mrd")
    if stored is None:
        study.set_user_attr("mrd", meta)
    elif stored != meta:
        differ = [k for k in meta if stored.get(k) != meta[k]]
        raise MRDError(
            f"Study '{name}' in {masked(url)} was made with another "
            f"{', '.join(d.replace('_', ' ') for d in differ)}; rerun it as it was, or give "
            "--study NAME for a new study."
        )
    return study


def _study_meta(
    session: Session, space: dict[str, Param], seed_list: list[int], target: str, own_pairs: bool
) -> dict[str, Any]:
    """What every trial of a study must share: data, target, seeds, space, the config
    besides the tuned keys, and the pretrained pair."""
    # Only the sections a trial's result depends on: a new section elsewhere (where trials
    # run, ablation or self-training settings) or a new option of an unused backbone must
    # not make an existing study refuse to continue.
    full = session.cfg.to_dict()
    base = {k: full[k] for k in TRIAL_SECTIONS}
    base["model"] = model_in_use(base["model"])
    meta: dict[str, Any] = {
        "dataset": session.corpus.name,
        "data": session.corpus.fingerprint(),
        "target": target,
        "seeds": seed_list,
        "search_space": {k: p.to_dict() for k, p in space.items()},
        "base_config": signature(base),
    }
    if not own_pairs:
        meta["pretrained_pair"] = [file_sha256(session.run.pretrained(r)) for r in ROLES]
    return meta


def per_trial_tpe(optuna: Any, seed: int) -> Any:
    """TPE whose random state is drawn from (seed, trial number) at the start of each trial.

    TPE keeps no state besides its random generator (it refits on the study's trials every
    time), so a fresh ``TPESampler`` per trial changes nothing else; it makes two processes
    on one study draw different configs, and a trial's config depend only on the seed, its
    number and the trials before it.
    """

    class PerTrialTPE(optuna.samplers.BaseSampler):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self._inner = optuna.samplers.TPESampler(seed=seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._inner = optuna.samplers.TPESampler(seed=seed * 100_003 + trial.number)
            self._inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return self._inner.sample_independent(study, trial, name, dist)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._inner.after_trial(study, trial, state, values)

    return PerTrialTPE()


def _counts(study: optuna.Study) -> dict[str, int]:
    states = Counter(
        t.state.name for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")
    )
    out = {
        s.lower(): states.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
    }
    out["finished"] = out["complete"] + out["pruned"]
    return out


def _row(t: Any, T: Any) -> dict[str, Any]:
    inter = list(t.intermediate_values.values())
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "value": t.value if t.state == T.COMPLETE else None,
        "best_intermediate": max(inter) if inter else None,
        "epochs_run": t.user_attrs.get("epochs_run", 0),
        "epochs_planned": t.user_attrs.get("epochs_planned"),
        "seed_values": t.user_attrs.get("seed_values", []),
        "retry_of": t.user_attrs.get("retry_of", _stale_retry_of(t)),
        "worker": t.user_attrs.get("worker"),
        "error": t.user_attrs.get("error"),
        "params": dict(t.params),
    }


def _stale_retry_of(t: Any) -> int | None:
    retried = t.system_attrs.get("failed_trial") if hasattr(t, "system_attrs") else None
    return retried if isinstance(retried, int) else None


def _order(row: dict[str, Any]) -> tuple:
    rank = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "fail": 4}
    score = row["value"] if row["state"] == "complete" else row["best_intermediate"]
    return (rank.get(row["state"], 5), -(score if score is not None else -1.0), row["number"])


def _summarise(
    session: Session,
    study: optuna.Study,
    url: str,
    name: str,
    target: str,
    seed_list: list[int],
    trials: int,
    space: dict[str, Param],
    ran_here: list[int],
    study_dir: Path,
    optuna: Any,
    pretrained_value: float | None = None,
) -> TuneResult:
    T = optuna.trial.TrialState
    frozen = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    rows = sorted((_row(t, T) for t in frozen), key=_order)
    complete = [t for t in frozen if t.state == T.COMPLETE]
    best = best_path = None
    if complete:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": dict(b.params)}
        best_path = study_dir / "best.yaml"
        atomic_write_text(
            best_path, best_yaml(session.cfg, b.params, name, target, seed_list, b.number, b.value)
        )
    importances, note = None, None
    if len(complete) < 2:
        note = "needs at least 2 complete trials"
    else:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                importances = dict(optuna.importance.get_param_importances(study))
            if caught:  # e.g. too few trials to tell the parameters apart
                note = str(caught[0].message).strip().splitlines()[0]
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            note = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    counts = _counts(study)
    result = TuneResult(
        dataset=session.corpus.name,
        study=name,
        storage=masked(url),
        target=target,
        seeds=seed_list,
        trials_requested=trials,
        counts=counts,
        trials=rows,
        best=best,
        best_config=best_path,
        importances=importances,
        importance_note=note,
        pretrained_value=pretrained_value,
        epochs_run=sum(r["epochs_run"] for r in rows if r["state"] in ("complete", "pruned")),
        epochs_planned=sum(
            r["epochs_planned"] or 0 for r in rows if r["state"] in ("complete", "pruned")
        ),
        ran_here=ran_here,
    )
    atomic_write_json(study_dir / "results.json", result.to_dict())
    return result


def best_yaml(
    cfg: Config,
    params: dict[str, Any],
    study: str,
    target: str,
    seed_list: list[int],
    number: int,
    value: float,
) -> str:
    """The best trial's tuned keys as a ``--config`` file, with where they come from."""
    header = (
        f"# mrd tune: best trial {number} of study '{study}' (dataset {cfg.dataset.name}),\n"
        f"# mean validation W-F1 of the {target} model(s) over seeds {seed_list}: {value:.2f}.\n"
        "# Only the tuned keys; they override the dataset's config (and any --config given\n"
        "# to mrd tune, which is not repeated here). Test scores come from one run of\n"
        "# `mrd distill --config <this file>` and `mrd evaluate`.\n"
    )
    return header + yaml.safe_dump(nested_overrides(cfg, dict(params)), sort_keys=False)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (none where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

"""A study of `mrd tune` in its Optuna storage: what every process working on it shares.

``StudyJob`` holds where the study is, what it must match and its settings; ``open_study``
opens (or creates) it with heartbeats, the per-trial TPE sampler and the pruner, refusing a
stored study made with another data set, target, seeds, space, base config or pretrained
pair (``study_meta``); ``counts`` tallies its trials by state, surplus trials left out.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrd_cli.config import model_in_use
from mrd_cli.core.rundir import ROLES
from mrd_cli.core.session import Session, signature
from mrd_cli.errors import MRDError
from mrd_cli.io import file_sha256
from mrd_cli.recipes.tune.space import Param
from mrd_cli.safetext import mask_credentials

if TYPE_CHECKING:  # optuna is an optional extra, imported only when a study runs
    import optuna

INSTALL_HINT = "pip install -e '.[tune]'"
# The config sections a trial's result depends on (the study's base config).
TRIAL_SECTIONS = ("seed", "dataset", "model", "pretrain", "partition", "distill")
FINISHED = ("COMPLETE", "PRUNED")


def require_optuna() -> Any:
    """The optuna module, or a user error naming the extra to install."""
    try:
        import optuna
    except ImportError:
        raise MRDError(f"mrd tune needs Optuna, an optional extra: {INSTALL_HINT}") from None
    return optuna


@dataclass(frozen=True)
class StudyJob:
    """What every process working on a study shares: where the study is, what it must
    match (``meta``), how many trials it should hold, the space, seeds and target, and the
    sampler, pruning and heartbeat settings."""

    url: str
    name: str
    seed: int  # the config seed: the sampler's random state is drawn from it per trial
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


def create_sqlite_file(url: str) -> None:
    """Create a missing SQLite study file the way every other mrd file is made (0666 less
    the umask; SQLite's own default is 0644 whatever the umask), refusing a symlink at
    its path. SQLite takes an empty file for a new database."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :] in ("", ":memory:"):
        return
    path = Path(url[len(prefix) :].split("?", 1)[0])
    if path.exists() or path.is_symlink():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except FileExistsError:
        return  # another tune process made it meanwhile
    except OSError:
        return  # SQLite says what is wrong when it opens it
    os.close(fd)


def open_storage(optuna: Any, job: StudyJob) -> optuna.storages.RDBStorage:
    """The study's RDB storage with heartbeats (a trial whose process died is failed after
    the grace period and queued again), or a user error whose message masks the password
    (a library's message may quote the URL: masked too)."""
    url = job.url
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    create_sqlite_file(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=job.heartbeat_interval,
                grace_period=job.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3
                ),
            )
    except Exception as exc:  # bad URL, missing driver, unreachable server
        first = (str(exc).strip().splitlines() or [""])[0]
        raise MRDError(
            f"Cannot open the study storage {masked(url)}: {type(exc).__name__}: "
            f"{mask_credentials(first)}. Check --storage (an SQLAlchemy URL such as "
            "sqlite:///path/study.db or postgresql://user:password@host/db)."
        ) from None


def open_study(optuna: Any, job: StudyJob) -> optuna.Study:
    """The study ``job`` names, created if new (``load_if_exists``): its storage
    (``open_storage``), the per-trial TPE sampler and the pruner; refused when the stored study was
    made with other settings (``job.meta``)."""
    url, name = job.url, job.name
    store = open_storage(optuna, job)
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=job.prune_startup, n_warmup_steps=job.prune_warmup
        )
        if job.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=store,
        study_name=name,
        direction="maximize",
        sampler=per_trial_tpe(optuna, job.seed),
        pruner=pruner,
        load_if_exists=True,
    )
    meta = job.meta
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


def study_meta(
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


def counts(study: optuna.Study) -> dict[str, int]:
    states = Counter(
        t.state.name for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")
    )
    out = {
        s.lower(): states.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
    }
    out["finished"] = out["complete"] + out["pruned"]
    return out

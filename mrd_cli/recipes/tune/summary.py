"""What a study holds after a call of `mrd tune`: every trial (best first), the best
trial's keys as a ``--config`` file (``best.yaml``), the parameters' importances, and
``results.json`` with all of it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mrd_cli.config import Config, nested_overrides
from mrd_cli.core.session import Session
from mrd_cli.io import atomic_write_json, atomic_write_text
from mrd_cli.recipes.tune.study import StudyJob, counts, masked

if TYPE_CHECKING:  # optuna is an optional extra, imported only when a study runs
    import optuna


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


def row(t: Any, T: Any) -> dict[str, Any]:
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


def summarise(
    session: Session,
    study: optuna.Study,
    job: StudyJob,
    ran_here: list[int],
    study_dir: Path,
    optuna: Any,
    pretrained_value: float | None = None,
) -> TuneResult:
    """The study as it stands (every trial, best first; the best config; importances),
    written to ``study_dir`` as ``best.yaml`` and ``results.json``."""
    T = optuna.trial.TrialState
    frozen = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    rows = sorted((row(t, T) for t in frozen), key=_order)
    complete = [t for t in frozen if t.state == T.COMPLETE]
    best = best_path = None
    if complete:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": dict(b.params)}
        best_path = study_dir / "best.yaml"
        text = best_yaml(
            session.cfg, b.params, job.name, job.target, job.seed_list, b.number, b.value
        )
        atomic_write_text(best_path, text)
    importances, note = _importances(study, optuna, len(complete))
    finished = [r for r in rows if r["state"] in ("complete", "pruned")]
    result = TuneResult(
        dataset=session.corpus.name,
        study=job.name,
        storage=masked(job.url),
        target=job.target,
        seeds=job.seed_list,
        trials_requested=job.trials,
        counts=counts(study),
        trials=rows,
        best=best,
        best_config=best_path,
        importances=importances,
        importance_note=note,
        pretrained_value=pretrained_value,
        epochs_run=sum(r["epochs_run"] for r in finished),
        epochs_planned=sum(r["epochs_planned"] or 0 for r in finished),
        ran_here=ran_here,
    )
    atomic_write_json(study_dir / "results.json", result.to_dict())
    return result


def _importances(
    study: optuna.Study, optuna: Any, complete: int
) -> tuple[dict[str, float] | None, str | None]:
    """Optuna's parameter importances, or None and why not."""
    if complete < 2:
        return None, "needs at least 2 complete trials"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importances = dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return None, (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    # A warning: e.g. too few trials to tell the parameters apart.
    note = str(caught[0].message).strip().splitlines()[0] if caught else None
    return importances, note


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

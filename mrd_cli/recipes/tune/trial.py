"""One trial of `mrd tune`: distil the pair with the trial's config once per seed.

The trial's value is the mean over seeds of the target's validation W-F1 at each model's
best distillation epoch; every epoch is reported to the pruner at step ``seed_index *
stride + epoch - 1`` (so a step compares one seed at one epoch across trials). A trial whose
keys change pretraining pretrains its own pair in its directory first.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mrd_cli.config import nested_overrides, with_values
from mrd_cli.core.events import Event, OnEvent, emit
from mrd_cli.core.rundir import ROLES, RunDir
from mrd_cli.core.session import Session
from mrd_cli.core.training import evaluate
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_text, file_sha256
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.partition import ensure_partitioned
from mrd_cli.recipes.tune.study import StudyJob

if TYPE_CHECKING:  # optuna is an optional extra, imported only when a study runs
    import optuna


def target_value(values: dict[str, float], target: str) -> float:
    """The objective's W-F1 from each model's W-F1: one model's, or the mean of both."""
    if target == "both":
        return sum(values[r] for r in ROLES) / len(ROLES)
    return values[target]


def run_trial(
    session: Session,
    trial: optuna.Trial,
    params: dict[str, Any],
    job: StudyJob,
    study_dir: Path,
    optuna: Any,
    on_event: OnEvent | None = None,
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
    seed_list, target, stride = job.seed_list, job.target, job.stride
    if not job.own_pairs:
        pair = [file_sha256(session.run.pretrained(r)) for r in ROLES]
        if pair != job.meta.get("pretrained_pair"):
            raise MRDError(
                f"The pretrained pair in {session.run.root} is not the one this study started "
                "from (another command rewrote it); give --study NAME for a new study."
            )
    if job.own_pairs:  # a trial that changes pretraining keys pretrains its own pair
        base = RunDir(trial_dir / "base")
        ensure_partitioned(session.derive(copy.deepcopy(cfg), base), on_event=on_event)
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

        def report(event: Event, index: int = index, key: str = key, seed: int = seed) -> None:
            if event.kind != "epoch" or event.log is None:  # a warning: passed on as it is
                if on_event:
                    on_event(event)
                return
            log = event.log
            for role, wf1 in log.val_wf1.items():
                best[role] = max(best.get(role, wf1), wf1)
            state["epochs"] += 1
            trial.set_user_attr("epochs_run", state["epochs"])
            emit(on_event, "epoch", task=key, log=log)
            trial.report(target_value(log.val_wf1, target), index * stride + log.epoch - 1)
            # Pruning at the very last epoch would save nothing and lose the trial's value.
            last = index == len(seed_list) - 1 and log.epoch == log.epochs
            if job.prune and not last and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at seed {seed}, epoch {log.epoch}")

        try:
            distill(session.derive(seed_cfg, base), on_event=report, out_dir=out_dir)
        finally:
            (out_dir / ".pair.state.pt").unlink(missing_ok=True)
        # Each model's best distillation epoch, whether or not it beat the pretrained
        # weights (``keep_start``): trials that do not beat the start still differ.
        values.append(target_value(best, target))
        trial.set_user_attr("seed_values", values)
    return sum(values) / len(values)


def pretrained_score(session: Session, target: str) -> float:
    """The pretrained pair's validation W-F1 of the target: the bar a trial should beat."""
    val = session.tensors("val")
    wf1 = {}
    for role in ROLES:
        model, _ = session.load_model(session.run.pretrained(role), "mrd pretrain")
        wf1[role] = evaluate(model, val, session.corpus.label_names)["weighted_f1"]
    return target_value(wf1, target)

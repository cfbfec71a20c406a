"""Recipe: partition the training utterances into mcti / mitc / general / simple (Eq. 9-13).

``in_sample`` uses the pretrained checkpoints' predictions on the training split;
``cross_fit`` trains ``folds`` pairs of fold models (the pretraining loop of
``recipes.pretrain.train_role``) and uses each pair's predictions on the dialogues it did
not see. Writes ``RUN/partition.json``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrd_cli.config import Config
from mrd_cli.core.checkpoint import load_checkpoint
from mrd_cli.core.device import resolve_device, set_threads
from mrd_cli.core.executor import Executor, LocalExecutor
from mrd_cli.core.partition import (
    fold_assignment,
    partition_by_agreement,
    partition_document,
    read_partition,
)
from mrd_cli.core.provenance import check_pretrained_pair, settings_differences
from mrd_cli.core.rundir import ROLES, RunDir
from mrd_cli.core.session import Session, role_backbone
from mrd_cli.core.timing import StepTimer, maybe
from mrd_cli.core.training import EpochLog, predict
from mrd_cli.data.corpus import Corpus
from mrd_cli.data.tensors import SplitTensors
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_json, file_sha256
from mrd_cli.models.stacked import supports as stacked_supports
from mrd_cli.recipes.pretrain import pretrain, train_role, train_role_stacked


@dataclass
class PartitionResult:
    """The partition file's content (``document``, as written to ``RUN/partition.json``)."""

    document: dict[str, Any]
    path: Path

    def to_dict(self) -> dict[str, Any]:
        """The summary printed by ``--json``: the document without the per-dialogue groups."""
        return {k: v for k, v in self.document.items() if k != "groups"}


def partition(
    session: Session,
    method: str | None = None,
    folds: int | None = None,
    checkpoints: dict[str, Path] | None = None,
    on_epoch: Callable[[str, EpochLog], None] | None = None,
    on_fold: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> PartitionResult:
    """Partition the training utterances by the agreement of the two models' predictions.
    ``executor`` (default: this process) trains the cross-fitted fold models."""
    cfg = session.cfg
    method = method or cfg.partition.method
    folds = folds or cfg.partition.folds
    paths = checkpoints or {r: session.run.pretrained(r) for r in ROLES}
    # Loading also checks both checkpoints against the data, whichever method runs.
    name = cfg.dataset.name
    loaded = {r: session.load_model(paths[r], f"mrd pretrain --dataset {name}") for r in ROLES}
    check_pretrained_pair({r: ckpt for r, (_, ckpt) in loaded.items()})
    models = {r: model for r, (model, _) in loaded.items()}
    train = session.tensors("train")
    if method == "in_sample":
        preds = {role: predict(models[role], train) for role in ROLES}
    else:
        preds = _cross_fitted_predictions(
            session, train, folds, on_epoch, on_fold, executor or LocalExecutor()
        )
    y_true = train.labels[train.mask].cpu().numpy()
    codes = partition_by_agreement(
        y_true, preds["multi"][train.mask].cpu().numpy(), preds["text"][train.mask].cpu().numpy()
    )
    doc = partition_document(
        codes=codes,
        y_true=y_true,
        lengths=train.lengths.numpy(),
        dialogue_ids=train.ids,
        label_names=session.corpus.label_names,
        method=method,
        folds=folds,
        provenance={
            "dataset": session.corpus.name,
            "data_fingerprint": session.corpus.fingerprint(),
            "checkpoints": {
                r: {"path": str(paths[r]), "sha256": file_sha256(paths[r])} for r in ROLES
            },
            "seed": cfg.seed,
            "pretrain_config": asdict(cfg.pretrain),
            "model_config": asdict(cfg.model),
        },
    )
    atomic_write_json(session.run.partition, doc)
    return PartitionResult(document=doc, path=session.run.partition)


def _cross_fitted_predictions(
    session: Session,
    train: SplitTensors,
    folds: int,
    on_epoch: Callable[[str, EpochLog], None] | None,
    on_fold: Callable[[str], None] | None,
    executor: Executor,
) -> dict[str, torch.Tensor]:
    """Out-of-fold predictions [D, L] of fold models for every training dialogue; each
    role's fold models are one unit of ``executor`` (the two roles may train side by side)."""
    device = executor.device(str(session.device))
    units = [FoldUnit(session.cfg, role, folds, device) for role in ROLES]
    if executor.in_process:
        fn = functools.partial(
            fold_predictions,
            on_epoch=on_epoch,
            on_fold=on_fold,
            tensors=session.tensor_cache,
        )
    else:
        fn = fold_predictions
        if on_fold:  # no epoch bars from other processes: say what runs, and when it ends
            on_fold(
                f"fold models of {' and '.join(u.role for u in units)}: "
                f"{min(executor.slots(), len(units))} at a time ({executor.kind} executor)"
            )
    preds = {}
    for index, pred in executor.map(fn, units, session.corpus):
        preds[units[index].role] = torch.tensor(pred, device=train.labels.device)
        if on_fold and not executor.in_process:
            on_fold(f"{units[index].role}: {folds} fold models done")
    return preds


@dataclass(frozen=True)
class FoldUnit:
    """One role's ``folds`` fold models as a unit of work: the config, the role, the device."""

    cfg: Config
    role: str
    folds: int
    device: str


def fold_predictions(
    unit: FoldUnit,
    corpus: Corpus,
    on_epoch: Callable[[str, EpochLog], None] | None = None,
    on_fold: Callable[[str], None] | None = None,
    tensors: dict | None = None,
) -> np.ndarray:
    """Train the fold models of one role (the folds of a role as one stacked computation
    where the backbone has a stacked form) and return their out-of-fold predictions
    [D, L] (numpy) for every training dialogue. Writes nothing."""
    set_threads(unit.cfg.threads)
    session = Session(unit.cfg, corpus, RunDir(Path(".")), resolve_device(unit.device))
    if tensors is not None:
        session.tensor_cache = tensors
    role, folds = unit.role, unit.folds
    train, val = session.tensors("train"), session.tensors("val")
    assignment = fold_assignment(train.num_dialogues, folds, session.cfg.seed)
    pred_all = torch.zeros_like(train.labels)
    held = [np.flatnonzero(assignment == k) for k in range(folds)]
    fit_parts = [train.subset(np.flatnonzero(assignment != k)) for k in range(folds)]
    seeds = [session.cfg.seed + 1000 * (k + 1) for k in range(folds)]

    def fold_key(k: int) -> str:
        return f"fold {k + 1}/{folds} {role}"

    def callback(key: str):
        return (lambda log: on_epoch(key, log)) if on_epoch else None

    def keep(k: int, model) -> None:
        fold_pred = predict(model, train.subset(held[k]))
        rows = torch.as_tensor(held[k], device=train.mask.device)
        pred_all[rows, : fold_pred.shape[1]] = fold_pred

    stackable = stacked_supports(session.cfg.model)
    if role_backbone(session.cfg, role)[0] != "dialogue":
        stackable = False  # only the dialogue network has a stacked form
    if session.cfg.partition.stacked and stackable:
        # The folds of a role as one batched computation (equal to training each alone).
        if on_fold:
            on_fold(f"folds 1-{folds}/{folds} {role} (together)")
        trained = train_role_stacked(
            session,
            role,
            list(zip(fit_parts, seeds)),
            val,
            on_epoch=[callback(fold_key(k)) for k in range(folds)],
        )
        for k, (model, _) in enumerate(trained):
            keep(k, model)
    else:
        for k in range(folds):
            if on_fold:
                on_fold(fold_key(k))
            model, _ = train_role(
                session, role, fit_parts[k], val, seeds[k], on_epoch=callback(fold_key(k))
            )
            keep(k, model)
    return pred_all.cpu().numpy()


def partition_is_current(session: Session) -> bool:
    """The partition exists, matches the pretrained checkpoints, data and partition config."""
    paths = {r: session.run.pretrained(r) for r in ROLES}
    try:
        doc = read_partition(
            session.run.partition, session.cfg.dataset.name, session.corpus.fingerprint(), paths
        )
    except (MRDError, KeyError, TypeError, OSError):
        return False
    p = session.cfg.partition
    return doc["method"] == p.method and (p.method != "cross_fit" or doc["folds"] == p.folds)


def ensure_partitioned(
    session: Session,
    force: bool = False,
    on_epoch: Callable[[str, Any], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    replace_pretrained: bool = False,
    timer: StepTimer | None = None,
    executor: Executor | None = None,
) -> None:
    """Pretrain and partition unless current outputs are already in the run directory
    (``mrd run`` and ``mrd ablate`` start with it); ``timer`` gets each step's wall time.

    Pretrained checkpoints made with other settings are not replaced silently: without
    ``force`` (or ``replace_pretrained``) that is an error saying what differs.
    """
    if not (force or replace_pretrained):
        _refuse_replacing_pretrained(session)
    if force or not session.pretrained_is_current():
        if on_step:
            on_step("pretrain")
        with maybe(timer, "pretrain"):
            pretrain(session, on_epoch=on_epoch)
    elif on_step:
        on_step("pretrain (reused)")
    if force or not partition_is_current(session):
        if on_step:
            on_step("partition")
        # Units in other processes report when each ends (their epochs have no bars here).
        remote = executor is not None and not executor.in_process
        with maybe(timer, "partition"):
            partition(
                session,
                on_epoch=on_epoch,
                on_fold=on_step if remote else None,
                executor=executor,
            )
    elif on_step:
        on_step("partition (reused)")


def _refuse_replacing_pretrained(session: Session) -> None:
    """Refuse to retrain over pretrained checkpoints made with other settings."""
    for role in ROLES:
        path = session.run.pretrained(role)
        if not path.is_file() or session.current_pretrained(role) is not None:
            continue
        try:
            ckpt = load_checkpoint(path)
        except MRDError:
            what = "cannot be read"
        else:
            diffs = settings_differences(ckpt, session.cfg.to_dict(), session.corpus.fingerprint())
            what = f"was made with other settings ({'; '.join(diffs) or 'another config'})"
        raise MRDError(
            f"{path} {what}; this run would replace it. Use `mrd run --force` to retrain it "
            "with the current settings, or another --run-dir to keep it."
        )

"""Recipe: partition the training utterances into mcti / mitc / general / simple (Eq. 9-13).

``in_sample`` uses the pretrained checkpoints' predictions on the training split;
``cross_fit`` trains ``folds`` pairs of fold models (the pretraining loop of
``recipes.pretrain.train_role``) and uses each pair's predictions on the dialogues it did
not see. Writes ``RUN/partition.json``.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrd_cli.config import Config
from mrd_cli.core.checkpoint import load_checkpoint
from mrd_cli.core.device import resolve_device, set_threads
from mrd_cli.core.events import OnEvent, emit, epoch_events
from mrd_cli.core.executor import Executor, LocalExecutor
from mrd_cli.core.partition import (
    fold_assignment,
    partition_by_agreement,
    partition_document,
    read_partition,
)
from mrd_cli.core.provenance import check_pretrained_pair, settings_differences
from mrd_cli.core.rundir import ROLES, RunDir
from mrd_cli.core.session import Session
from mrd_cli.core.timing import StepTimer, maybe
from mrd_cli.core.training import predict, state_matches
from mrd_cli.data.corpus import Corpus
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_json, file_sha256
from mrd_cli.recipes.pretrain import pretrain, role_signature, train_role


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
    on_event: OnEvent | None = None,
    executor: Executor | None = None,
) -> PartitionResult:
    """Partition the training utterances by the agreement of the two models' predictions.
    ``executor`` (default: this process) trains the cross-fitted fold models; ``on_event``
    gets their events (``cross_fitted_predictions``)."""
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
        preds = cross_fitted_predictions(session, folds, on_event, executor)
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


def cross_fitted_predictions(
    session: Session,
    folds: int,
    on_event: OnEvent | None = None,
    executor: Executor | None = None,
) -> dict[str, torch.Tensor]:
    """Out-of-fold predictions [D, L] of fold models for every training dialogue; each fold
    model is one unit of ``executor`` (units may train side by side).

    In this process each fold model keeps a resumable training state
    (``RUN/folds/.<role>.fold<k>.state.pt``, ``Trainer``): an interrupted partition resumes
    every fold model from its last finished epoch, and a finished one is not trained again.
    The states are removed once every fold model has finished. ``on_event`` gets an
    ``epoch`` event per epoch of a fold model in this process (task "fold 2/5 text"), and
    ``note`` events saying what runs and when each ends for fold models in other processes
    (their epochs are not reported)."""
    executor = executor or LocalExecutor()
    train = session.tensors("train")
    device = executor.device(str(session.device))
    in_process = executor.in_process
    units = [
        FoldUnit(
            session.cfg,
            role,
            k,
            folds,
            device,
            # A worker never writes the run directory (``core.executor``): no state there.
            str(session.run.training_state("folds", f"{role}.fold{k + 1}")) if in_process else None,
        )
        for role in ROLES
        for k in range(folds)
    ]
    if in_process:
        fn = functools.partial(
            fold_predictions,
            on_event=on_event,
            tensors=session.tensor_cache,
        )
    else:
        fn = fold_predictions
        emit(  # no epochs come from other processes: say what runs, and when each ends
            on_event,
            "note",
            text=f"{len(units)} fold models of {' and '.join(ROLES)}: "
            f"{min(executor.slots(), len(units))} at a time ({executor.kind} executor)",
        )
    assignment = fold_assignment(train.num_dialogues, folds, session.cfg.seed)
    preds = {role: torch.zeros_like(train.labels) for role in ROLES}
    for index, pred in executor.map(fn, units, session.corpus):
        unit = units[index]
        rows = torch.as_tensor(np.flatnonzero(assignment == unit.fold), device=train.mask.device)
        preds[unit.role][rows, : pred.shape[1]] = torch.as_tensor(pred, device=rows.device)
        if not in_process:
            emit(on_event, "note", text=f"{unit.key}: done")
    if in_process:  # every fold model's state, also those of other fold counts
        folds_dir = session.run.root / "folds"  # where the units' training_state paths are
        for state in folds_dir.glob(".*.fold*.state.pt"):
            state.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # kept if something else is in it
            folds_dir.rmdir()
    return preds


@dataclass(frozen=True)
class FoldUnit:
    """One fold model as a unit of work: the config, the role, the 0-based ``fold`` of
    ``folds``, the device, and where its resumable training state is kept (None: nowhere)."""

    cfg: Config
    role: str
    fold: int
    folds: int
    device: str
    state_path: str | None = None

    @property
    def key(self) -> str:
        return f"fold {self.fold + 1}/{self.folds} {self.role}"


def fold_predictions(
    unit: FoldUnit,
    corpus: Corpus,
    on_event: OnEvent | None = None,
    tensors: dict | None = None,
) -> np.ndarray:
    """Train one fold model (``train_role`` on the training dialogues outside the fold) and
    return its predictions [n, L] (numpy) on the fold's n dialogues, in index order. Writes
    nothing but the unit's training state."""
    set_threads(unit.cfg.threads)
    session = Session(unit.cfg, corpus, RunDir(Path(".")), resolve_device(unit.device))
    if tensors is not None:
        session.tensor_cache = tensors
    cfg, k = session.cfg, unit.fold
    train, val = session.tensors("train"), session.tensors("val")
    assignment = fold_assignment(train.num_dialogues, unit.folds, cfg.seed)
    state = Path(unit.state_path) if unit.state_path is not None else None
    seed = cfg.seed + 1000 * (k + 1)
    # The fold is part of what a saved state must match: which dialogues it trains on.
    fold_id = ("fold", k, unit.folds, cfg.seed)
    sig = role_signature(session, unit.role, seed, fold_id)
    model, _ = train_role(
        session,
        unit.role,
        train.subset(np.flatnonzero(assignment != k)),
        val,
        seed,
        state_path=state,
        # A state of this fold model (interrupted, or finished before another fold was):
        # continue from it; any other file there is overwritten.
        resume=state is not None and state_matches(state, sig),
        on_epoch=epoch_events(on_event, unit.key, role=unit.role, fold=k + 1, folds=unit.folds),
        identity=fold_id,
    )
    return predict(model, train.subset(np.flatnonzero(assignment == k))).cpu().numpy()


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
    on_event: OnEvent | None = None,
    replace_pretrained: bool = False,
    timer: StepTimer | None = None,
    executor: Executor | None = None,
) -> None:
    """Pretrain and partition unless current outputs are already in the run directory
    (``mrd run`` and ``mrd ablate`` start with it); ``timer`` gets each step's wall time,
    ``on_event`` a ``step`` event as each starts (or is reused) and the steps' own events.

    Pretrained checkpoints made with other settings are not replaced silently: without
    ``force`` (or ``replace_pretrained``) that is an error saying what differs.
    """
    if not (force or replace_pretrained):
        _refuse_replacing_pretrained(session)
    if force or not session.pretrained_is_current():
        emit(on_event, "step", text="pretrain")
        with maybe(timer, "pretrain"):
            pretrain(session, on_event=on_event)
    else:
        emit(on_event, "step", text="pretrain (reused)")
    if force or not partition_is_current(session):
        emit(on_event, "step", text="partition")
        with maybe(timer, "partition"):
            partition(session, on_event=on_event, executor=executor)
    else:
        emit(on_event, "step", text="partition (reused)")


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

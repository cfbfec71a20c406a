"""Recipe: supervised pretraining of M_multi and M_text (L_cls + L_reg + the backbone's
auxiliary losses).

Each model trains alone on its modalities; its epoch is chosen on validation W-F1. Writes
``RUN/pretrain/<role>.pt``. A backbone with auxiliary losses (Foal-Net: AVEL, MEM; DUAL:
static, dynamic alignment) adds them, weighted, to the loss and logs each by name; the
dialogue network has none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mrd_cli.config import PretrainConfig
from mrd_cli.core.checkpoint import save_checkpoint
from mrd_cli.core.device import seed_everything
from mrd_cli.core.events import OnEvent, epoch_events
from mrd_cli.core.losses import l2_penalty
from mrd_cli.core.protocol_gap import TestWatch
from mrd_cli.core.rundir import ROLES
from mrd_cli.core.session import Session, role_seed, signature
from mrd_cli.core.tracking import recorder
from mrd_cli.core.training import (
    EpochLog,
    Selected,
    Trainer,
    TrainingStep,
    make_classification_loss,
    train_epoch,
)
from mrd_cli.data.tensors import Batch, SplitTensors
from mrd_cli.models.dialogue import Backbone, run_model

# The logged loss terms; a backbone's auxiliary losses follow under their own names
# (``ClassifierStep.terms``).
TERMS = ("total", "cls", "reg")


@dataclass
class TrainedModels:
    """The chosen epoch of each trained model and where its checkpoint was written."""

    stage: str
    dataset: str
    selected: dict[str, Selected]
    checkpoints: dict[str, Path]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            self.stage: {
                role: {
                    "checkpoint": str(self.checkpoints[role]),
                    "epoch": sel.epoch,
                    "val_weighted_f1": sel.val_metrics["weighted_f1"],
                    **({"stopping": sel.stopping} if sel.stopping is not None else {}),
                }
                for role, sel in self.selected.items()
            },
        }


class PretrainResult(TrainedModels):
    """What ``pretrain`` returns: the selected epoch of each pretrained model."""


def pretrain(
    session: Session,
    roles: tuple[str, ...] = ROLES,
    resume: bool = False,
    on_event: OnEvent | None = None,
) -> PretrainResult:
    """Pretrain M_multi and/or M_text; writes ``RUN/pretrain/<role>.pt``.

    With ``resume``, a role with a saved training state continues from its last finished
    epoch, and a role whose checkpoint was already finished with this data, config and seed
    is kept as it is. ``on_event`` gets an ``epoch`` event per epoch (task: the role).
    """
    selected: dict[str, Selected] = {}
    train, val = session.tensors("train"), session.tensors("val")
    for role in roles:
        state_path = session.run.training_state("pretrain", role)
        finished = session.current_pretrained(role) if resume else None
        if finished is not None and not state_path.is_file():
            selected[role] = Selected(
                state_dict=finished["state_dict"],
                epoch=finished["epoch"],
                val_metrics=finished["val_metrics"],
                stopping=finished.get("stopping"),
                history=finished.get("history"),
            )
            continue
        record = recorder(session, "pretrain", {"model": role})  # RUN/pretrain/<role>.metrics...
        watch = test_watch(session)
        model, selected[role] = train_role(
            session,
            role,
            train,
            val,
            session.cfg.seed,
            state_path=state_path,
            resume=resume,
            on_epoch=record.wrap(epoch_events(on_event, role)),
            watch=watch,
        )
        save_checkpoint(
            session.run.pretrained(role),
            model,
            selected[role].state_dict,
            **session.checkpoint_meta("pretrain", role, selected[role]),
        )
        if watch is not None:
            write_watch(watch, "model", session.run.pretrained(role), selected[role])
        record.finish({role: session.run.pretrained(role)})
        state_path.unlink(missing_ok=True)
    session.run.save_config(session.cfg)
    return PretrainResult(
        stage="pretrain",
        dataset=session.corpus.name,
        selected=selected,
        checkpoints={r: session.run.pretrained(r) for r in selected},
    )


def test_watch(session: Session) -> TestWatch | None:
    """The protocol-gap diagnostic's per-epoch test scorer, when the session asks for it."""
    if not session.protocol_gap:
        return None
    return TestWatch(session.tensors("test"), session.corpus.label_names)


def write_watch(watch: TestWatch, name: str, checkpoint: Path, selected: Selected) -> None:
    """Write model ``name``'s test-by-epoch scores beside its saved ``checkpoint``."""
    run = (selected.stopping or {}).get("epochs_run", len(watch.per_epoch.get(name, [])))
    watch.write(name, checkpoint, selected.epoch, run)


def pretrain_stop_floor(cfg: PretrainConfig) -> int:
    """Early stopping counts only the second half of the pretraining schedule: the first
    epochs may pass through a collapse (on the synthetic corpus, a text model's validation
    W-F1 fell from 26% to 3-4% for five epochs, then climbed to 60% by the end)."""
    return cfg.epochs // 2


def role_signature(
    session: Session, role: str, seed: int, identity: tuple[Any, ...] = ()
) -> str:
    """What a saved training state of ``train_role(session, role, ..., seed, identity=...)``
    must match: the data, dataset, model and pretraining configs, the model's seed, and
    ``identity``."""
    cfg = session.cfg
    return signature(
        "pretrain",
        role,
        cfg.dataset,
        cfg.model,
        cfg.pretrain,
        role_seed(cfg, role, seed),
        session.corpus.fingerprint(),
        *identity,
    )


def train_role(
    session: Session,
    role: str,
    train: SplitTensors,
    val: SplitTensors,
    seed: int,
    state_path: Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[EpochLog], None] | None = None,
    identity: tuple[Any, ...] = (),
    watch: TestWatch | None = None,
) -> tuple[Backbone, Selected]:
    """Train one fresh model of ``role`` on ``train``; returns it (at its selected epoch)
    with the selection. Partitioning's fold models are trained with it too. ``seed`` is
    the run's (or fold's) seed; the model's own comes from ``role_seed``. ``identity``
    (a fold model's fold) joins what a resumed state must match (``role_signature``)."""
    cfg = session.cfg
    sig = role_signature(session, role, seed, identity)
    seed = role_seed(cfg, role, seed)
    seed_everything(seed)
    model = session.build_model(role)
    torch.manual_seed(seed)
    step = ClassifierStep(model, train, cfg.pretrain, session.corpus.num_classes)
    trainer = Trainer(
        models=step.models,
        optimizer=step.optimizer,
        epochs=cfg.pretrain.epochs,
        val=val,
        label_names=session.corpus.label_names,
        seed=seed,
        state_path=state_path,
        resume=resume,
        signature=sig,
        on_epoch=on_epoch,
        patience=cfg.pretrain.patience,
        stop_floor=pretrain_stop_floor(cfg.pretrain),
        after_epoch=watch,
    )
    for epoch in trainer.epochs():
        # L_cls + L_reg + the backbone's auxiliary losses, one optimizer step per batch.
        terms = train_epoch(step, step.batches(epoch, trainer.generator), session.device)
        trainer.end_epoch(epoch, terms)
    selected = trainer.selected()["model"]
    model.load_state_dict(selected.state_dict)
    return model, selected


class ClassifierStep(TrainingStep):
    """What one pretraining step needs: the batches of an epoch and the loss of a batch.

    Building it takes the model's input standardisation statistics from ``train``, the
    class weights of L_cls and a fresh Adam optimizer. ``terms`` names the logged terms:
    ``TERMS`` and then the backbone's auxiliary losses (unweighted, as they are logged).
    ``update`` (loss, backward, step in one call) is the step ``train_role``'s loop
    (``core.training.train_epoch``) takes on each batch.
    """

    def __init__(self, model: Backbone, train: SplitTensors, cfg: PretrainConfig, num_classes: int):
        self.model = model
        self.models = {"model": model}
        self.terms = TERMS + tuple(model.aux_weights)
        self.train = train.select(model.modalities)
        self.cfg = cfg
        model.set_input_stats(self.train.features, self.train.mask)
        self.cls_loss = make_classification_loss(cfg.loss, cfg.focal_gamma, train, num_classes)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        """Shuffled batches of dialogues (the shuffle drawn from ``generator``)."""
        return self.train.batches(self.cfg.batch_size, generator)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """L_cls + L_reg + the weighted auxiliary losses of one batch, every term by name."""
        logits = run_model(self.model, batch)
        aux = self.model.aux_losses(batch.labels, batch.mask)  # AVEL, MEM, alignment...
        l_cls = self.cls_loss(logits, batch.labels, batch.mask)
        l_reg = l2_penalty(self.model.parameters(), self.cfg.l2)
        l_aux = [self.model.aux_weights[name] * term for name, term in aux.items()]
        total = l_cls + l_reg + sum(l_aux)
        return {"total": total, "cls": l_cls, "reg": l_reg, **aux}

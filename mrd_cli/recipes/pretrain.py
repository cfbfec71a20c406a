"""Recipe: supervised pretraining of M_multi and M_text (L_cls + L_reg).

Each model trains alone on its modalities; its epoch is chosen on validation W-F1. Writes
``RUN/pretrain/<role>.pt``.
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
from mrd_cli.core.losses import l2_penalty
from mrd_cli.core.rundir import ROLES
from mrd_cli.core.session import Session, signature
from mrd_cli.core.training import (
    EpochLog,
    Selected,
    Trainer,
    make_classification_loss,
    mean_terms,
)
from mrd_cli.data.tensors import Batch, SplitTensors
from mrd_cli.models.dialogue import DialogueModel, run_model

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
    on_epoch: Callable[[str, EpochLog], None] | None = None,
) -> PretrainResult:
    """Pretrain M_multi and/or M_text; writes ``RUN/pretrain/<role>.pt``.

    With ``resume``, a role with a saved training state continues from its last finished
    epoch, and a role whose checkpoint was already finished with this data, config and seed
    is kept as it is.
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
            )
            continue
        model, selected[role] = train_role(
            session,
            role,
            train,
            val,
            session.cfg.seed,
            state_path=state_path,
            resume=resume,
            on_epoch=(lambda log, r=role: on_epoch(r, log)) if on_epoch else None,
        )
        save_checkpoint(
            session.run.pretrained(role),
            model,
            selected[role].state_dict,
            **session.checkpoint_meta("pretrain", role, selected[role]),
        )
        state_path.unlink(missing_ok=True)
    session.run.save_config(session.cfg)
    return PretrainResult(
        stage="pretrain",
        dataset=session.corpus.name,
        selected=selected,
        checkpoints={r: session.run.pretrained(r) for r in selected},
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
) -> tuple[DialogueModel, Selected]:
    """Train one fresh model of ``role`` on ``train``; returns it (at its selected epoch)
    with the selection. Partitioning's fold models are trained with it too."""
    cfg = session.cfg
    seed_everything(seed)
    model = session.build_model(role)
    sig = signature(
        "pretrain", role, cfg.dataset, cfg.model, cfg.pretrain, seed, session.corpus.fingerprint()
    )
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
    )
    for epoch in trainer.epochs():
        model.train()
        sums, count = torch.zeros(len(TERMS), device=session.device), 0
        for batch in step.batches(epoch, trainer.generator):
            terms = step.loss(batch)  # L_cls + L_reg
            step.optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            step.optimizer.step()
            sums += torch.stack([terms[t] for t in TERMS]).detach()
            count += 1
        trainer.end_epoch(epoch, mean_terms(TERMS, sums, count))
    selected = trainer.selected()["model"]
    model.load_state_dict(selected.state_dict)
    return model, selected


class ClassifierStep:
    """What one pretraining step needs: the batches of an epoch and the loss of a batch.

    Building it takes the model's input standardisation statistics from ``train``, the
    class weights of L_cls and a fresh Adam optimizer. ``update`` (loss, backward, step in
    one call) is what ``benchmarks/throughput.py`` times.
    """

    def __init__(
        self, model: DialogueModel, train: SplitTensors, cfg: PretrainConfig, num_classes: int
    ):
        self.model = model
        self.models = {"model": model}
        self.train = train.select(model.modalities)
        self.cfg = cfg
        model.set_input_stats(self.train.features, self.train.mask)
        self.cls_loss = make_classification_loss(cfg.loss, cfg.focal_gamma, train, num_classes)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        """Shuffled batches of dialogues (the shuffle drawn from ``generator``)."""
        return self.train.batches(self.cfg.batch_size, generator)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """L_cls + L_reg of one batch, every term by name."""
        logits = run_model(self.model, batch)
        l_cls = self.cls_loss(logits, batch.labels, batch.mask)
        l_reg = l2_penalty(self.model.parameters(), self.cfg.l2)
        return {"total": l_cls + l_reg, "cls": l_cls, "reg": l_reg}

    def update(self, batch: Batch) -> Tensor:
        """One optimizer step on ``batch``; its loss terms stacked as in ``TERMS``."""
        terms = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        return torch.stack([terms[t] for t in TERMS]).detach()

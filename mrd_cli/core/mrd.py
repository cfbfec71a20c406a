"""Mutual Refinement Distillation: the joint training loop of M_multi and M_text.

Both models train together on L_total (Eq. 15, ``losses.mrd_total_loss``): their own
classification losses, mutual distillation (MIC, Eq. 3-5), refactoring towards their frozen
pre-distillation outputs (ILC, Eq. 6-8) and L2, over the utterances the curriculum (RCL,
Eq. 14) makes active in each epoch. Each model's epoch is chosen on its own validation W-F1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mrd_cli.config import DistillConfig
from mrd_cli.core.curriculum import Curriculum
from mrd_cli.core.losses import l2_penalty, mrd_total_loss
from mrd_cli.core.training import (
    EpochLog,
    EpochStep,
    Selected,
    make_classification_loss,
    predict_logits,
    train_epochs,
)
from mrd_cli.data.tensors import Batch, SplitTensors
from mrd_cli.models.dialogue import DialogueModel, run_model

TERMS = ("total", "cls_m", "cls_t", "dm", "dt", "rm", "rt", "reg")


@dataclass
class DistillBatch:
    """A batch of dialogues with what L_total needs besides the models' own logits."""

    batch: Batch
    active: Tensor  # [B, L] bool: utterances of the current curriculum stage
    frozen_multi: Tensor  # [B, L, C] logits of the frozen pre-distillation M_multi
    frozen_text: Tensor  # [B, L, C] logits of the frozen pre-distillation M_text


class DistillStep(EpochStep):
    """A distillation epoch of the pair: L_total (Eq. 15) over the curriculum's utterances.

    ``groups`` [D, L] holds each training utterance's partition code (``GROUPS`` index).
    Building the step computes the frozen copies' logits once (they never change).
    """

    terms = TERMS

    def __init__(
        self,
        multi: DialogueModel,
        text: DialogueModel,
        train: SplitTensors,
        groups: Tensor,
        cfg: DistillConfig,
        curriculum: Curriculum,
        num_classes: int,
    ):
        self.multi, self.text = multi, text
        self.models = {"multi": multi, "text": text}
        self.train = train
        self.groups = groups
        self.cfg = cfg
        self.curriculum = curriculum
        # The frozen copies never change, so their logits (eval mode) are computed once.
        self.frozen_multi = predict_logits(multi, train)
        self.frozen_text = predict_logits(text, train)
        self.cls_loss = make_classification_loss(cfg.loss, cfg.focal_gamma, train, num_classes)
        self.params = list(multi.parameters()) + list(text.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[DistillBatch]:
        train = self.train
        device = train.mask.device
        codes = torch.as_tensor(self.curriculum.active_codes(epoch), device=device)
        active_all = train.mask & codes[self.groups]
        # Dialogues with no active utterance this stage are left out of the epoch; the host
        # reads this once per epoch.
        rows = torch.nonzero(active_all.any(1)).flatten().cpu()
        for batch in train.batches(self.cfg.batch_size, generator, rows=rows):
            length = batch.mask.shape[1]
            yield DistillBatch(
                batch,
                active_all[batch.index, :length],
                self.frozen_multi[batch.index, :length],
                self.frozen_text[batch.index, :length],
            )

    def update(self, b: DistillBatch) -> Tensor:
        cfg = self.cfg
        terms = mrd_total_loss(
            run_model(self.multi, b.batch),
            run_model(self.text, b.batch),
            b.frozen_multi,
            b.frozen_text,
            b.batch.labels,
            b.active,
            cls_loss=self.cls_loss,
            alpha=cfg.alpha,
            beta=cfg.beta,
            gamma=cfg.gamma,
            delta=cfg.delta,
            temperature=cfg.temperature,
            t2_scaling=cfg.t2_scaling,
            l_reg=l2_penalty(self.params, cfg.l2),
        )
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        return torch.stack([terms[t] for t in TERMS]).detach()


def distill_pair(
    multi: DialogueModel,
    text: DialogueModel,
    train: SplitTensors,
    groups: Tensor,
    val: SplitTensors,
    cfg: DistillConfig,
    curriculum: Curriculum,
    label_names: list[str],
    seed: int,
    state_path: Path | None = None,
    resume: bool = False,
    signature: str = "",
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> dict[str, Selected]:
    """Distil the pretrained pair; returns the selected epoch of ``multi`` and ``text``.

    ``groups`` [D, L] holds each training utterance's partition code (``GROUPS`` index).
    """
    step = DistillStep(multi, text, train, groups, cfg, curriculum, len(label_names))
    return train_epochs(
        models=step.models,
        optimizer=step.optimizer,
        epochs=cfg.epochs,
        step=step,
        val=val,
        label_names=label_names,
        seed=seed,
        state_path=state_path,
        resume=resume,
        signature=signature,
        on_epoch=on_epoch,
    )

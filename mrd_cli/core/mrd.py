"""Mutual Refinement Distillation: the joint training loop of M_multi and M_text.

Both models train together on L_total (Eq. 15, ``losses.mrd_total_loss``): their own
classification losses, mutual distillation (MIC, Eq. 3-5), refactoring towards their frozen
pre-distillation outputs (ILC, Eq. 6-8) and L2, over the utterances the curriculum (RCL,
Eq. 14) makes active in each epoch. Each model's epoch is chosen on its own validation W-F1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from mrd_cli.config import DistillConfig
from mrd_cli.core.curriculum import Curriculum
from mrd_cli.core.losses import l2_penalty, mrd_total_loss
from mrd_cli.core.training import (
    EpochLog,
    Selected,
    make_classification_loss,
    predict_logits,
    train_epochs,
)
from mrd_cli.data.tensors import SplitTensors
from mrd_cli.models.dialogue import DialogueModel, run_model

TERMS = ("total", "cls_m", "cls_t", "dm", "dt", "rm", "rt", "reg")


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
    device = train.mask.device
    # The frozen copies never change, so their logits (eval mode) are computed once.
    frozen_multi = predict_logits(multi, train)
    frozen_text = predict_logits(text, train)
    cls_loss = make_classification_loss(cfg.loss, cfg.focal_gamma, train, len(label_names))
    params = list(multi.parameters()) + list(text.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr)

    def step(epoch: int, generator: torch.Generator) -> dict[str, Tensor]:
        codes = torch.as_tensor(curriculum.active_codes(epoch), device=device)
        active_all = train.mask & codes[groups]
        # Dialogues with no active utterance this stage are left out of the epoch; the host
        # reads this once per epoch.
        rows = torch.nonzero(active_all.any(1)).flatten().cpu()
        multi.train()
        text.train()
        sums = torch.zeros(len(TERMS), device=device)
        count = 0
        for batch in train.batches(cfg.batch_size, generator, rows=rows):
            length = batch.mask.shape[1]
            active = active_all[batch.index, :length]
            terms = mrd_total_loss(
                run_model(multi, batch),
                run_model(text, batch),
                frozen_multi[batch.index, :length],
                frozen_text[batch.index, :length],
                batch.labels,
                active,
                cls_loss=cls_loss,
                alpha=cfg.alpha,
                beta=cfg.beta,
                gamma=cfg.gamma,
                delta=cfg.delta,
                temperature=cfg.temperature,
                t2_scaling=cfg.t2_scaling,
                l_reg=l2_penalty(params, cfg.l2),
            )
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            sums += torch.stack([terms[t].detach() for t in TERMS])
            count += 1
        sums /= max(count, 1)
        return dict(zip(TERMS, sums))

    return train_epochs(
        models={"multi": multi, "text": text},
        optimizer=optimizer,
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

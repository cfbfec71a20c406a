"""Recipe: Mutual Refinement Distillation of the pretrained pair.

Both models train together on L_total (Eq. 15, ``losses.mrd_total_loss``): their own
classification losses, mutual distillation (MIC, Eq. 3-5), refactoring towards their frozen
pre-distillation outputs (ILC, Eq. 6-8) and L2, over the utterances the curriculum (RCL,
Eq. 14) makes active in each epoch. Each model's epoch is chosen on its own validation W-F1.
Writes ``RUN/distill/multi.pt`` and ``text.pt``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mrd_cli.config import DistillConfig
from mrd_cli.core.checkpoint import save_checkpoint
from mrd_cli.core.curriculum import Curriculum
from mrd_cli.core.device import seed_everything
from mrd_cli.core.losses import l2_penalty, mrd_total_loss
from mrd_cli.core.partition import partition_codes, read_partition
from mrd_cli.core.rundir import ROLES
from mrd_cli.core.session import Session, signature
from mrd_cli.core.training import (
    EpochLog,
    Trainer,
    make_classification_loss,
    mean_terms,
    predict_logits,
)
from mrd_cli.data.tensors import Batch, SplitTensors
from mrd_cli.io import file_sha256
from mrd_cli.models.dialogue import DialogueModel, run_model
from mrd_cli.recipes.pretrain import TrainedModels

# The logged loss terms: classification (cls_*), mutual distillation (kd_*, Eq. 3-4),
# refactoring (ref_*, Eq. 6-7) and L2 (reg), for the multimodal (_m) and text (_t) model.
TERMS = ("total", "cls_m", "cls_t", "kd_m", "kd_t", "ref_m", "ref_t", "reg")


class DistillResult(TrainedModels):
    """What ``distill`` returns: the selected epoch of each distilled model."""


def distill(
    session: Session,
    resume: bool = False,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    out_dir: Path | None = None,
) -> DistillResult:
    """MRD on the pretrained pair; writes ``RUN/distill/multi.pt`` and ``text.pt``
    (or into ``out_dir``)."""
    cfg = session.cfg
    name = cfg.dataset.name
    paths = {r: session.run.pretrained(r) for r in ROLES}
    models = {r: session.load_model(paths[r], f"mrd pretrain --dataset {name}")[0] for r in ROLES}
    doc = read_partition(session.run.partition, name, session.corpus.fingerprint(), paths)
    train, val = session.tensors("train"), session.tensors("val")
    curriculum = Curriculum.build(
        cfg.distill.curriculum,
        cfg.distill.epochs,
        cfg.distill.stage_fractions,
        cfg.distill.cumulative,
        doc["totals"],
    )
    for stage in curriculum.skipped:
        if on_warning:
            on_warning(
                f"The {stage} group of the partition is empty; its curriculum stage is skipped."
            )
    seed_everything(cfg.seed)
    state_path = (out_dir or session.run.root / "distill") / ".pair.state.pt"
    # The partition's own hash: a state saved under another partition (other method or
    # folds, same checkpoints) must not be resumed.
    part_sha = file_sha256(session.run.partition)
    sig = signature(
        "distill",
        cfg.dataset,
        cfg.distill,
        cfg.seed,
        session.corpus.fingerprint(),
        doc["provenance"],
        part_sha,
    )
    step = DistillStep(
        models["multi"],
        models["text"],
        train,
        partition_codes(doc, train),
        cfg.distill,
        curriculum,
        session.corpus.num_classes,
    )
    trainer = Trainer(
        models=models,
        optimizer=step.optimizer,
        epochs=cfg.distill.epochs,
        val=val,
        label_names=session.corpus.label_names,
        seed=cfg.seed,
        state_path=state_path,
        resume=resume,
        signature=sig,
        on_epoch=on_epoch,
        # Early stopping only within the last curriculum stage: no stage is cut short.
        patience=cfg.distill.patience,
        stop_floor=curriculum.last_stage_start,
    )
    for epoch in trainer.epochs():
        for model in models.values():
            model.train()
        sums, count = torch.zeros(len(TERMS), device=session.device), 0
        for batch in step.batches(epoch, trainer.generator):
            terms = step.loss(batch)  # L_total, Eq. 15 (mrd_total_loss)
            step.optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            step.optimizer.step()
            sums += torch.stack([terms[t] for t in TERMS]).detach()
            count += 1
        trainer.end_epoch(epoch, mean_terms(TERMS, sums, count))
    selected = trainer.selected()

    targets = {r: (out_dir / f"{r}.pt") if out_dir else session.run.distilled(r) for r in ROLES}
    for role in ROLES:
        save_checkpoint(
            targets[role],
            models[role],
            selected[role].state_dict,
            **session.checkpoint_meta(
                "distill",
                role,
                selected[role],
                partition_sha256=part_sha,
                curriculum=curriculum.describe(),
            ),
        )
    state_path.unlink(missing_ok=True)
    if out_dir is None:
        session.run.save_config(cfg)
    return DistillResult(
        stage="distill", dataset=session.corpus.name, selected=selected, checkpoints=targets
    )


@dataclass
class DistillBatch:
    """A batch of dialogues with what L_total needs besides the models' own logits."""

    batch: Batch
    active: Tensor  # [B, L] bool: utterances of the current curriculum stage
    frozen_multi: Tensor  # [B, L, C] logits of the frozen pre-distillation M_multi
    frozen_text: Tensor  # [B, L, C] logits of the frozen pre-distillation M_text


class DistillStep:
    """What one distillation step of the pair needs: the batches of an epoch (the dialogues
    with utterances of the curriculum's current stage) and L_total of a batch.

    ``groups`` [D, L] holds each training utterance's partition code (``GROUPS`` index).
    Building the step computes the frozen copies' logits once (they never change) and a
    fresh Adam optimizer over both models. ``update`` (loss, backward, step in one call) is
    what ``benchmarks/throughput.py`` times.
    """

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
        """Shuffled batches of the dialogues with an utterance active in ``epoch``."""
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

    def loss(self, b: DistillBatch) -> dict[str, Tensor]:
        """L_total (Eq. 15) of one batch, every term by name."""
        cfg = self.cfg
        return mrd_total_loss(
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

    def update(self, b: DistillBatch) -> Tensor:
        """One optimizer step on ``b``; its loss terms stacked as in ``TERMS``."""
        terms = self.loss(b)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        return torch.stack([terms[t] for t in TERMS]).detach()

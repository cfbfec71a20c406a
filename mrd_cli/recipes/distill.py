"""Recipe: Mutual Refinement Distillation of the pretrained pair.

Both models train together on L_total (Eq. 15, ``losses.mrd_total_loss``): their own
classification losses, mutual distillation (MIC, Eq. 3-5), refactoring towards their frozen
pre-distillation outputs (ILC, Eq. 6-8) and L2, over the utterances the curriculum (RCL,
Eq. 14) makes active in each epoch. Each model's epoch is chosen on its own validation W-F1,
with its pretrained weights as a candidate ("epoch 0", ``distill.keep_start``). Writes
``RUN/distill/multi.pt`` and ``text.pt``.
"""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mrd_cli.config import DistillConfig
from mrd_cli.core.card import parent
from mrd_cli.core.checkpoint import save_checkpoint
from mrd_cli.core.curriculum import Curriculum
from mrd_cli.core.decision import distill_decision
from mrd_cli.core.device import seed_everything
from mrd_cli.core.events import OnEvent, emit, epoch_events
from mrd_cli.core.losses import control_teacher, l2_penalty, mrd_total_loss
from mrd_cli.core.partition import partition_codes, read_partition
from mrd_cli.core.rundir import ROLES
from mrd_cli.core.session import Session, signature
from mrd_cli.core.tracking import recorder
from mrd_cli.core.training import (
    Trainer,
    TrainingStep,
    make_classification_loss,
    predict_logits,
    train_epoch,
)
from mrd_cli.data.tensors import Batch, SplitTensors
from mrd_cli.io import file_sha256
from mrd_cli.models.dialogue import Backbone, DialogueModel, run_model
from mrd_cli.recipes.pretrain import TrainedModels, test_watch, write_watch

# The logged loss terms: classification (cls_*), mutual distillation (kd_*, Eq. 3-4),
# refactoring (ref_*, Eq. 6-7) and L2 (reg), for the multimodal (_m) and text (_t) model.
TERMS = ("total", "cls_m", "cls_t", "kd_m", "kd_t", "ref_m", "ref_t", "reg")


@dataclass
class DistillResult(TrainedModels):
    """What ``distill`` returns: the selected epoch of each distilled model, and (with
    ``keep_start``) each pretrained model's validation W-F1, the bar distillation had to
    beat. ``selected_epoch`` 0 means the pretrained weights were kept."""

    start_val_wf1: dict[str, float] | None = None
    # Per model, when a distillation epoch beat the pretrained weights on validation: how
    # sure the bootstrap was of the gain, and whether that sufficed (``Trainer.selected``).
    start_guard: dict[str, dict[str, Any]] = field(default_factory=dict)
    start_confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for role, entry in out[self.stage].items():
            entry["selected_epoch"] = entry["epoch"]
            entry["keep_start"] = self.start_val_wf1 is not None
            entry["kept_pretrained"] = entry["epoch"] == 0
            entry["start_val_weighted_f1"] = (self.start_val_wf1 or {}).get(role)
            entry["start_guard"] = self.start_guard.get(role)
            # Whether distillation changed the model and why, in one line (core/decision.py).
            sel = self.selected[role]
            entry["decision"] = distill_decision(
                {
                    "epoch": sel.epoch,
                    "val_metrics": sel.val_metrics,
                    "history": sel.history,
                    "start_val_weighted_f1": entry["start_val_weighted_f1"],
                    "start_guard": entry["start_guard"],
                    "config": {"distill": {"start_confidence": self.start_confidence}},
                }
            )
        return out


def distill(
    session: Session,
    resume: bool = False,
    on_event: OnEvent | None = None,
    out_dir: Path | None = None,
) -> DistillResult:
    """MRD on the pretrained pair; writes ``RUN/distill/multi.pt`` and ``text.pt``
    (or into ``out_dir``). ``on_event`` gets an ``epoch`` event per epoch (task
    "distill") and a ``warning`` for each skipped curriculum stage."""
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
        emit(
            on_event,
            "warning",
            text=f"The {stage} group of the partition is empty; its curriculum stage is skipped.",
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
    record = recorder(  # RUN/distill/<role>.metrics.jsonl (ablation cells: in their folder)
        session,
        "distill",
        {r: r for r in ROLES},
        stage_of=lambda epoch: curriculum.stages[curriculum.stage_at(epoch - 1)][0],
        directory=out_dir,
        loggers=out_dir is None,
    )
    watch = test_watch(session)  # the protocol-gap diagnostic (None when off)
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
        on_epoch=record.wrap(epoch_events(on_event, "distill")),
        # The pretrained pair as "epoch 0": a model keeps it unless distillation beats it.
        start_candidate=cfg.distill.keep_start,
        start_confidence=cfg.distill.start_confidence,
        # Early stopping only within the last curriculum stage: no stage is cut short.
        patience=cfg.distill.patience,
        stop_floor=curriculum.last_stage_start,
        after_epoch=watch,
    )
    for epoch in trainer.epochs():
        # L_total (Eq. 15, mrd_total_loss), one optimizer step of both models per batch.
        terms = train_epoch(step, step.batches(epoch, trainer.generator), session.device)
        trainer.end_epoch(epoch, terms)
    selected = trainer.selected()
    start = trainer.start_val_wf1()

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
                # The stages in visiting order with their epochs, for `mrd plot`'s shading.
                curriculum_stages=[[stage, n] for stage, n in curriculum.stages],
                kept_pretrained=selected[role].epoch == 0,
                start_val_weighted_f1=None if start is None else start[role],
                start_guard=trainer.start_guard.get(role),
                parents=[
                    parent(f"pretrained {r} model (start, frozen copy)", paths[r], session.run.root)
                    for r in ROLES
                ]
                + [parent("partition", session.run.partition, session.run.root, part_sha)],
            ),
        )
        if watch is not None:
            write_watch(watch, role, targets[role], selected[role])
    record.finish(targets)
    state_path.unlink(missing_ok=True)
    if out_dir is None:
        session.run.save_config(cfg)
    return DistillResult(
        stage="distill",
        dataset=session.corpus.name,
        selected=selected,
        checkpoints=targets,
        start_val_wf1=start,
        start_guard=trainer.start_guard,
        start_confidence=cfg.distill.start_confidence,
    )


@dataclass
class DistillBatch:
    """A batch of dialogues with what L_total needs besides the models' own logits."""

    batch: Batch
    active: Tensor  # [B, L] bool: utterances of the current curriculum stage
    # [B, L, C] eval-mode logits of the frozen pre-distillation models, for
    # ``refactoring_target: eval``; None with ``matched_dropout`` (computed in ``loss``).
    frozen_multi: Tensor | None
    frozen_text: Tensor | None


class DistillStep(TrainingStep):
    """What one distillation step of the pair needs: the batches of an epoch (the dialogues
    with utterances of the curriculum's current stage) and L_total of a batch.

    ``groups`` [D, L] holds each training utterance's partition code (``GROUPS`` index).
    Building the step freezes a copy of each model (the refactoring targets, Eq. 6-7) and
    makes a fresh Adam optimizer over both models. With ``refactoring_target: eval`` the
    copies' eval-mode logits are computed once; with ``matched_dropout`` each batch runs the
    copy under the same random state as the model, so both draw the same dropout mask.
    ``update`` (loss, backward, step in one call) is the step the recipe's loop
    (``core.training.train_epoch``) takes on each batch.
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
        self.terms = TERMS
        self.train = train
        self.groups = groups
        self.cfg = cfg
        self.curriculum = curriculum
        self.matched = cfg.refactoring_target == "matched_dropout"
        if self.matched:
            self.frozen = {role: frozen_copy(model) for role, model in self.models.items()}
        else:
            # The frozen copies never change, so their eval-mode logits are computed once.
            self.frozen_multi = predict_logits(multi, train)
            self.frozen_text = predict_logits(text, train)
        # ``teacher: frozen``: the partners' pre-distillation eval-mode logits, fixed.
        self.fixed_teacher = (
            {role: predict_logits(model, train) for role, model in self.models.items()}
            if cfg.teacher == "frozen"
            else None
        )
        self.cls_loss = make_classification_loss(cfg.loss, cfg.focal_gamma, train, num_classes)
        self.params = list(multi.parameters()) + list(text.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        # Only the negative control (``teacher_control: permuted``) draws from it; seeded
        # from the run's seed without drawing from the global random state.
        self.control_rng = torch.Generator(device=train.mask.device)
        self.control_rng.manual_seed(torch.initial_seed())

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
                None if self.matched else self.frozen_multi[batch.index, :length],
                None if self.matched else self.frozen_text[batch.index, :length],
            )

    def loss(self, b: DistillBatch) -> dict[str, Tensor]:
        """L_total (Eq. 15) of one batch, every term by name."""
        cfg = self.cfg
        logits, frozen = {}, {"multi": b.frozen_multi, "text": b.frozen_text}
        for role, model in self.models.items():
            if self.matched and matched_in_one_pass(model, b.batch):
                x = b.batch
                logits[role], frozen[role] = model.forward_matched(
                    self.frozen[role], x.features, x.speakers, x.mask, x.lengths
                )
                continue
            if self.matched:
                frozen[role] = same_dropout_logits(self.frozen[role], b.batch)
            logits[role] = run_model(model, b.batch)
        teachers = None
        if cfg.teacher != "partner" or cfg.teacher_control != "none":
            source = self.teacher_logits(b, logits)
            mode, rng = cfg.teacher_control, self.control_rng
            teachers = (
                control_teacher(source["text"], b.active, mode, rng),
                control_teacher(source["multi"], b.active, mode, rng),
            )
        return mrd_total_loss(
            logits["multi"],
            logits["text"],
            frozen["multi"],
            frozen["text"],
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
            teachers=teachers,
            cls_weight=cfg.cls_weight,
        )

    def teacher_logits(self, b: DistillBatch, logits: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each model's logits as its partner's teacher (``distill.teacher``): those of the
        training pass ("partner"), of its current weights in eval mode ("partner_eval") or
        of its pre-distillation weights in eval mode ("frozen")."""
        if self.cfg.teacher == "partner":
            return logits
        if self.fixed_teacher is not None:
            length = b.batch.mask.shape[1]
            return {r: t[b.batch.index, :length] for r, t in self.fixed_teacher.items()}
        out = {}
        with torch.no_grad():
            for role, model in self.models.items():
                model.eval()  # no dropout, so no draw from the random state
                out[role] = run_model(model, b.batch)
                model.train()
        return out


def frozen_copy(model: DialogueModel) -> DialogueModel:
    """A copy of ``model`` that never trains (no gradients); it stays in train mode, so that
    it applies dropout like the model it was copied from."""
    copy = deepcopy(model).train()
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy


def matched_in_one_pass(model: Backbone, batch: Batch) -> bool:
    """Can ``model`` and its frozen copy run as one pass under the same dropout masks
    (``DialogueModel.forward_matched``: the dialogue network with its GRU, on the CPU)?"""
    return (
        type(model) is DialogueModel
        and model.spec.encoder == "gru"
        and batch.mask.device.type == "cpu"
    )


@torch.no_grad()
def same_dropout_logits(frozen: DialogueModel, batch: Batch) -> Tensor:
    """Logits of the frozen copy on ``batch`` drawing the dropout mask that the model's next
    forward pass will draw: the random state is restored afterwards (``fork_rng``), so the
    model's own forward starts from the same state, and the two networks have the same
    layers in the same order."""
    device = batch.labels.device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return run_model(frozen, batch)

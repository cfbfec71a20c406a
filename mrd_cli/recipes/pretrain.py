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

import numpy as np
import torch
from torch import Tensor

from mrd_cli.config import PretrainConfig
from mrd_cli.core.checkpoint import save_checkpoint
from mrd_cli.core.device import seed_everything
from mrd_cli.core.losses import l2_penalty
from mrd_cli.core.metrics import classification_report
from mrd_cli.core.rundir import ROLES
from mrd_cli.core.session import Session, role_seed, signature
from mrd_cli.core.tracking import recorder
from mrd_cli.core.training import (
    EVAL_BATCH,
    EpochLog,
    Selected,
    Trainer,
    make_classification_loss,
    mean_terms,
    patience_exhausted,
)
from mrd_cli.data.tensors import Batch, SplitTensors
from mrd_cli.errors import MRDRunError
from mrd_cli.models.dialogue import Backbone, DialogueModel, run_model
from mrd_cli.models.stacked import MaskedAdam, StackedModels, real_rows

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
                history=finished.get("history"),
            )
            continue
        record = recorder(session, "pretrain", {"model": role})  # RUN/pretrain/<role>.metrics...
        model, selected[role] = train_role(
            session,
            role,
            train,
            val,
            session.cfg.seed,
            state_path=state_path,
            resume=resume,
            on_epoch=record.wrap((lambda log, r=role: on_epoch(r, log)) if on_epoch else None),
        )
        save_checkpoint(
            session.run.pretrained(role),
            model,
            selected[role].state_dict,
            **session.checkpoint_meta("pretrain", role, selected[role]),
        )
        record.finish({role: session.run.pretrained(role)})
        state_path.unlink(missing_ok=True)
    session.run.save_config(session.cfg)
    return PretrainResult(
        stage="pretrain",
        dataset=session.corpus.name,
        selected=selected,
        checkpoints={r: session.run.pretrained(r) for r in selected},
    )


def pretrain_stop_floor(cfg: PretrainConfig) -> int:
    """Early stopping counts only the second half of the pretraining schedule: the first
    epochs may pass through a collapse (on the synthetic corpus, a text model's validation
    W-F1 fell from 26% to 3-4% for five epochs, then climbed to 60% by the end)."""
    return cfg.epochs // 2


def train_role(
    session: Session,
    role: str,
    train: SplitTensors,
    val: SplitTensors,
    seed: int,
    state_path: Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> tuple[Backbone, Selected]:
    """Train one fresh model of ``role`` on ``train``; returns it (at its selected epoch)
    with the selection. Partitioning's fold models are trained with it too. ``seed`` is
    the run's (or fold's) seed; the model's own comes from ``role_seed``."""
    cfg = session.cfg
    seed = role_seed(cfg, role, seed)
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
        stop_floor=pretrain_stop_floor(cfg.pretrain),
    )
    for epoch in trainer.epochs():
        model.train()
        sums, count = torch.zeros(len(step.terms), device=session.device), 0
        for batch in step.batches(epoch, trainer.generator):
            terms = step.loss(batch)  # L_cls + L_reg + the backbone's auxiliary losses
            step.optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            step.optimizer.step()
            sums += torch.stack([terms[t] for t in step.terms]).detach()
            count += 1
        trainer.end_epoch(epoch, mean_terms(step.terms, sums, count))
    selected = trainer.selected()["model"]
    model.load_state_dict(selected.state_dict)
    return model, selected


class ClassifierStep:
    """What one pretraining step needs: the batches of an epoch and the loss of a batch.

    Building it takes the model's input standardisation statistics from ``train``, the
    class weights of L_cls and a fresh Adam optimizer. ``terms`` names the logged terms:
    ``TERMS`` and then the backbone's auxiliary losses (unweighted, as they are logged).
    ``update`` (loss, backward, step in one call) is what ``benchmarks/throughput.py`` times.
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

    def update(self, batch: Batch) -> Tensor:
        """One optimizer step on ``batch``; its loss terms stacked as in ``terms``."""
        terms = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        return torch.stack([terms[t] for t in self.terms]).detach()


def train_role_stacked(
    session: Session,
    role: str,
    parts: list[tuple[SplitTensors, int]],
    val: SplitTensors,
    on_epoch: list[Callable[[EpochLog], None] | None] | None = None,
) -> list[tuple[DialogueModel, Selected]]:
    """``train_role`` for several (training part, seed) pairs at once, as one batched
    computation (``models.stacked``); the cross-fitted partition's fold models use it.

    Each model is what ``train_role(session, role, part, val, seed)`` trains, up to
    floating-point rounding: the same initial weights (built after
    ``seed_everything(seed)``), input statistics, class weights, batch shuffles (a generator
    seeded with ``seed``), dropout masks (drawn on the CPU from a generator seeded with
    ``seed``, in the order of torch's global generator alone), Adam updates, validation,
    epoch choice and early stopping. A model whose epoch has fewer batches, or that stopped
    early, sits the remaining steps out. No resumable state is kept (fold models never had
    one).
    """
    cfg = session.cfg
    pc = cfg.pretrain
    models, steps = [], []
    parts = [(part, role_seed(cfg, role, seed)) for part, seed in parts]
    for part, seed in parts:
        seed_everything(seed)
        model = session.build_model(role)
        models.append(model)
        steps.append(ClassifierStep(model, part, pc, session.corpus.num_classes))
    stack = StackedModels(models)
    optimizer = MaskedAdam(stack.parameters(), lr=pc.lr)
    k_models = len(parts)
    shuffles = [torch.Generator().manual_seed(seed) for _, seed in parts]
    dropout = [torch.Generator().manual_seed(seed) for _, seed in parts]
    weights = [s.cls_loss for s in steps]
    best: list[Selected | None] = [None] * k_models
    stopped_at: list[int | None] = [None] * k_models
    done = [0] * k_models
    val_batches = list(val.select(stack.modalities).batches(EVAL_BATCH))
    for epoch in range(pc.epochs):
        running = [k for k in range(k_models) if stopped_at[k] is None]
        if not running:
            break
        sums = torch.zeros(k_models, len(TERMS), device=session.device)
        counts = [0] * k_models
        iters = {k: iter(steps[k].batches(epoch, shuffles[k])) for k in running}
        while iters:
            batches: list[Batch | None] = [None] * k_models
            for k in list(iters):
                batches[k] = next(iters[k], None)
                if batches[k] is None:
                    del iters[k]
            active = [b is not None for b in batches]
            if not any(active):
                break
            logits, lay = stack.forward(batches, dropout)
            labels, real = real_rows(batches, lay)
            # Each model's own L2 (L_reg), [K]: the sum's gradient is each model's own.
            reg_k = pc.l2 * torch.stack(
                [p.pow(2).flatten(1).sum(1) for p in stack.parameters()]
            ).sum(0)
            cls = torch.stack(
                [
                    weights[k](logits[k], labels[k], real[k])
                    if active[k]
                    else logits.new_zeros(())
                    for k in range(k_models)
                ]
            )
            optimizer.zero_grad()
            (cls.sum() + reg_k.sum()).backward()
            optimizer.step(active)
            with torch.no_grad():
                act = torch.as_tensor(active, device=sums.device, dtype=sums.dtype)
                sums += torch.stack([cls + reg_k, cls, reg_k], dim=1).detach() * act[:, None]
            for k in range(k_models):
                counts[k] += int(active[k])
        # Validation of every running model on the same batches, one stacked pass each.
        preds = _stacked_predict(stack, val, val_batches)
        y_true = val.labels[val.mask].cpu().numpy()
        losses_all = sums.cpu()
        for k in running:
            losses = dict(zip(TERMS, (losses_all[k] / max(counts[k], 1)).tolist()))
            if not all(np.isfinite(v) for v in losses.values()):
                raise MRDRunError(
                    f"Loss became non-finite at epoch {epoch + 1} of a fold model; lower the "
                    "learning rate or check the features."
                )
            report = classification_report(
                y_true, preds[k][val.mask].cpu().numpy(), session.corpus.label_names
            )
            done[k] = epoch + 1
            if best[k] is None or report["weighted_f1"] > best[k].val_metrics["weighted_f1"]:
                best[k] = Selected(state_dict=stack.unstack(k), epoch=epoch + 1, val_metrics=report)
            floor = pretrain_stop_floor(pc)
            if patience_exhausted(epoch + 1, [best[k].epoch], pc.patience, floor, pc.epochs):
                stopped_at[k] = epoch + 1
            if on_epoch and on_epoch[k]:
                on_epoch[k](
                    EpochLog(
                        epoch=epoch + 1,
                        epochs=pc.epochs,
                        losses=losses,
                        val_wf1={"model": report["weighted_f1"]},
                        best_wf1={"model": best[k].val_metrics["weighted_f1"]},
                    )
                )
    out = []
    for k, model in enumerate(models):
        sel = best[k]
        if sel is None:
            raise MRDRunError("Training finished without a single epoch; check 'epochs'.")
        sel.stopping = {
            "epochs_run": done[k],
            "max_epochs": pc.epochs,
            "patience": pc.patience,
            "stopped_at": stopped_at[k],
            "stop_reason": f"early stop: no better validation W-F1 in {pc.patience} epochs "
            f"counted from epoch {pretrain_stop_floor(pc) + 1}"
            if stopped_at[k]
            else f"ran all {pc.epochs} epochs",
        }
        model.load_state_dict(sel.state_dict)
        out.append((model, sel))
    return out


@torch.no_grad()
def _stacked_predict(stack: StackedModels, data: SplitTensors, batches: list[Batch]) -> Tensor:
    """Predicted class [K, D, L] of every model on every dialogue of ``data`` (no dropout)."""
    k_models = stack.k
    out = torch.zeros(k_models, *data.labels.shape, dtype=torch.long, device=data.labels.device)
    for batch in batches:
        logits, lay = stack.forward([batch] * k_models, None)
        pred = logits.argmax(-1)  # [K, N]
        n = lay.counts[0]
        rows, steps = torch.nonzero(batch.mask, as_tuple=True)
        out[:, batch.index[rows], steps] = pred[:, :n]
    return out

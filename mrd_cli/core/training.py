"""The training loop shared by pretraining and distillation, plus prediction.

``train_epochs`` runs epochs of a given step function, validates after each one, keeps each
model's best epoch by validation W-F1 (never the test set), saves a resumable state after
every epoch, and stops on a non-finite loss naming the term. Losses and predictions stay on
the device; the host reads them once per epoch.

A step is an ``EpochStep``: it builds an epoch's batches (``batches``) and makes one optimizer
step per batch (``update``). The two halves are separate so that a benchmark can time the
updates alone on batches built beforehand (``benchmarks/throughput.py``); ``ClassifierStep``
is the pretraining step, ``mrd.DistillStep`` the distillation step.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mrd_cli.config import PretrainConfig
from mrd_cli.core.io import atomic_torch_save
from mrd_cli.core.losses import class_weights_from_labels, classification_loss, l2_penalty
from mrd_cli.core.metrics import classification_report
from mrd_cli.data.tensors import Batch, SplitTensors
from mrd_cli.errors import MRDError, MRDRunError
from mrd_cli.models.dialogue import DialogueModel, run_model

EVAL_BATCH = 64


@dataclass
class Selected:
    """A model's chosen epoch: its weights and validation metrics."""

    state_dict: dict[str, Tensor]
    epoch: int
    val_metrics: dict[str, Any]


@dataclass
class EpochLog:
    """What the progress display shows after each epoch."""

    epoch: int  # 1-based
    epochs: int
    losses: dict[str, float]
    val_wf1: dict[str, float]
    best_wf1: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


StepFn = Callable[[int, torch.Generator], dict[str, Tensor]]


@torch.no_grad()
def batch_logits(model: DialogueModel, batches: Iterable[Batch], shape: torch.Size) -> Tensor:
    """Logits of ``model`` (eval mode, no dropout) on ``batches`` of a split whose labels are
    ``shape`` [D, L], scattered back to their rows: [D, L, C] on the device, 0 at padding."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.zeros(*shape, model.spec.num_classes, device=device)
    for batch in batches:
        logits = run_model(model, batch)
        out[batch.index, : logits.shape[1]] = logits
    model.train(was_training)
    return out


def predict_logits(
    model: DialogueModel, data: SplitTensors, batch_size: int = EVAL_BATCH
) -> Tensor:
    """Logits of every utterance, [D, L, C] on the device (eval mode, no dropout)."""
    batches = data.select(model.modalities).batches(batch_size)
    return batch_logits(model, batches, data.labels.shape)


def predict(model: DialogueModel, data: SplitTensors, batch_size: int = EVAL_BATCH) -> Tensor:
    """Predicted class of every utterance, [D, L] on the device (padding positions 0)."""
    return predict_logits(model, data, batch_size).argmax(-1)


def evaluate(model: DialogueModel, data: SplitTensors, label_names: list[str]) -> dict[str, Any]:
    """Metrics of ``model`` on a split; the labels are used only to score predictions."""
    preds = predict(model, data)
    y_pred = preds[data.mask].cpu().numpy()
    y_true = data.labels[data.mask].cpu().numpy()
    return classification_report(y_true, y_pred, label_names)


def make_classification_loss(
    loss: str, focal_gamma: float, train: SplitTensors, num_classes: int
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The configured L_cls as a function of (logits, labels, active)."""
    weights = (
        class_weights_from_labels(train.labels, train.mask, num_classes)
        if loss == "weighted_ce"
        else None
    )
    gamma = focal_gamma if loss == "focal" else None

    def fn(logits: Tensor, labels: Tensor, active: Tensor) -> Tensor:
        return classification_loss(logits, labels, active, weights, gamma)

    return fn


class EpochStep(ABC):
    """One training epoch of ``models``: ``step(epoch, generator)`` returns its mean loss terms.

    Subclasses say how an epoch's batches are built (``batches``: the data handling, drawing
    the shuffle from ``generator``) and what one optimizer step on a batch is (``update``:
    forward, backward, step; returns the loss terms stacked in the order of ``terms``).
    """

    terms: tuple[str, ...]
    models: dict[str, DialogueModel]
    optimizer: torch.optim.Optimizer

    @abstractmethod
    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[Any]:
        """The batches of 0-based ``epoch``, built on the device as they are consumed."""

    @abstractmethod
    def update(self, batch: Any) -> Tensor:
        """One optimizer step on ``batch``; its loss terms stacked as in ``terms``."""

    def run(self, batches: Iterable[Any]) -> dict[str, Tensor]:
        """Train on ``batches``; the mean of each loss term, still on the device."""
        for model in self.models.values():
            model.train()
        device = next(next(iter(self.models.values())).parameters()).device
        sums = torch.zeros(len(self.terms), device=device)
        count = 0
        for batch in batches:
            sums += self.update(batch)
            count += 1
        return dict(zip(self.terms, sums / max(count, 1)))

    def __call__(self, epoch: int, generator: torch.Generator) -> dict[str, Tensor]:
        return self.run(self.batches(epoch, generator))


class ClassifierStep(EpochStep):
    """A pretraining epoch of one model: L_cls + L_reg over shuffled batches of dialogues.

    Building the step takes the model's input standardisation statistics from ``train``.
    """

    terms = ("total", "cls", "reg")

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
        return self.train.batches(self.cfg.batch_size, generator)

    def update(self, batch: Batch) -> Tensor:
        logits = run_model(self.model, batch)
        l_cls = self.cls_loss(logits, batch.labels, batch.mask)
        l_reg = l2_penalty(self.model.parameters(), self.cfg.l2)
        loss = l_cls + l_reg
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return torch.stack([loss, l_cls, l_reg]).detach()


def run_epoch(
    step: StepFn,
    models: dict[str, DialogueModel],
    epoch: int,
    generator: torch.Generator,
    val: SplitTensors,
    label_names: list[str],
    state_path: Path | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Train one epoch with ``step`` and validate every model: (mean losses, val reports).

    Reading the losses is the epoch's one synchronisation with the device. A non-finite loss
    stops training before anything of this epoch is kept.
    """
    terms = step(epoch, generator)
    names = list(terms)
    values = torch.stack([terms[n].detach().float() for n in names]).cpu().tolist()
    losses = dict(zip(names, values))
    # Name the term that broke, not the total that merely inherits it.
    bad = [n for n, v in losses.items() if n != "total" and not np.isfinite(v)] or [
        n for n, v in losses.items() if not np.isfinite(v)
    ]
    if bad:
        where = f" The last good state (epoch {epoch}) is in {state_path}." if epoch else ""
        raise MRDRunError(
            f"Loss term '{bad[0]}' became non-finite at epoch {epoch + 1}; training stopped "
            f"and nothing from this epoch was saved.{where} Lower the learning rate or "
            "check the features."
        )
    reports = {name: evaluate(model, val, label_names) for name, model in models.items()}
    return losses, reports


def _cpu_rng_states(generator: torch.Generator) -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(states: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    generator.set_state(states["shuffle"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def train_epochs(
    *,
    models: dict[str, DialogueModel],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    step: StepFn,
    val: SplitTensors,
    label_names: list[str],
    seed: int,
    state_path: Path | None = None,
    resume: bool = False,
    signature: str = "",
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> dict[str, Selected]:
    """Run ``epochs`` epochs of ``step`` and return each model's best epoch on validation.

    ``step(epoch, generator)`` trains one epoch and returns its mean loss terms as device
    tensors. ``signature`` identifies config + data; a saved state with another signature
    is refused on resume.
    """
    generator = torch.Generator().manual_seed(seed)
    best: dict[str, Selected | None] = {n: None for n in models}
    history: list[dict[str, Any]] = []
    start = 0
    if resume and state_path is not None and state_path.is_file():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            stored_signature = state.get("signature")
        except Exception as exc:  # any unreadable file: corrupt, truncated, foreign
            raise MRDError(
                f"The saved training state {state_path} is unreadable ({type(exc).__name__}); "
                "delete it or run without --resume to start over."
            ) from None
        if stored_signature != signature:
            raise MRDError(
                f"The saved training state {state_path} comes from another config, data or "
                "seed; run without --resume to start over."
            )
        for name, model in models.items():
            model.load_state_dict(state["models"][name])
        optimizer.load_state_dict(state["optimizer"])
        for name, sel in state["best"].items():
            best[name] = Selected(**sel) if sel is not None else None
        history = state["history"]
        _restore_rng(state["rng"], generator)
        start = int(state["epoch"])

    for epoch in range(start, epochs):
        losses, reports = run_epoch(step, models, epoch, generator, val, label_names, state_path)
        val_wf1: dict[str, float] = {}
        for name, model in models.items():
            report = reports[name]
            val_wf1[name] = report["weighted_f1"]
            current = best[name]
            if current is None or report["weighted_f1"] > current.val_metrics["weighted_f1"]:
                best[name] = Selected(
                    state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
                    epoch=epoch + 1,
                    val_metrics=report,
                )
        history.append({"epoch": epoch + 1, "losses": losses, "val_wf1": val_wf1})
        if state_path is not None:
            atomic_torch_save(
                {
                    "signature": signature,
                    "epoch": epoch + 1,
                    "models": {n: m.state_dict() for n, m in models.items()},
                    "optimizer": optimizer.state_dict(),
                    "best": {
                        n: None if s is None else copy.copy(s.__dict__) for n, s in best.items()
                    },
                    "history": history,
                    "rng": _cpu_rng_states(generator),
                },
                state_path,
            )
        if on_epoch is not None:
            on_epoch(
                EpochLog(
                    epoch=epoch + 1,
                    epochs=epochs,
                    losses=losses,
                    val_wf1=val_wf1,
                    best_wf1={n: s.val_metrics["weighted_f1"] for n, s in best.items() if s},
                )
            )
    result = {n: s for n, s in best.items() if s is not None}
    if len(result) != len(models):
        raise MRDRunError("Training finished without a single epoch; check 'epochs'.")
    return result


def fit_classifier(
    model: DialogueModel,
    train: SplitTensors,
    val: SplitTensors,
    cfg: PretrainConfig,
    label_names: list[str],
    seed: int,
    state_path: Path | None = None,
    resume: bool = False,
    signature: str = "",
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> Selected:
    """Supervised pretraining of one model (L_cls + L_reg), epoch chosen on validation W-F1."""
    torch.manual_seed(seed)
    step = ClassifierStep(model, train, cfg, len(label_names))
    selected = train_epochs(
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
    return selected["model"]

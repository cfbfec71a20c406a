"""Building blocks of the training loops: prediction, validation and best-epoch selection,
and the resumable training state.

The loops themselves live in the recipes (``mrd_cli.recipes.pretrain`` and ``.distill``);
each one creates a ``Trainer`` and calls ``trainer.end_epoch`` after every epoch. The trainer
validates every model (never on the test set), keeps each model's best epoch by validation
W-F1, saves a resumable state, reports the epoch and stops on a non-finite loss naming the
term. Losses and predictions stay on the device; the host reads them once per epoch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mrd_cli.core.losses import class_weights_from_labels, classification_loss
from mrd_cli.core.metrics import classification_report
from mrd_cli.data.tensors import Batch, SplitTensors
from mrd_cli.errors import MRDError, MRDRunError
from mrd_cli.io import atomic_torch_save
from mrd_cli.models.dialogue import DialogueModel, run_model

EVAL_BATCH = 64


@dataclass
class Selected:
    """A model's chosen epoch: its weights and validation metrics."""

    state_dict: dict[str, Tensor]
    epoch: int
    val_metrics: dict[str, Any]
    # How the training ended (``Trainer.stopping()``): epochs run, early stop or not, why.
    stopping: dict[str, Any] | None = None


@dataclass
class EpochLog:
    """What the progress display shows after each epoch."""

    epoch: int  # 1-based
    epochs: int
    losses: dict[str, float]
    val_wf1: dict[str, float]
    best_wf1: dict[str, float]


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


def mean_terms(names: tuple[str, ...], sums: Tensor, count: int) -> dict[str, Tensor]:
    """An epoch's mean of each loss term from their stacked sums over ``count`` batches."""
    return dict(zip(names, sums / max(count, 1)))


def patience_exhausted(
    done: int, best_epochs: list[int], patience: int, floor: int, max_epochs: int
) -> bool:
    """Early stopping's rule after ``done`` epochs: every model's best epoch (1-based; 0 for
    none yet) lies ``patience`` or more epochs back, counting only epochs after the first
    ``floor``. Never at the last epoch (nothing is left to skip), never with patience 0."""
    if patience <= 0 or done >= max_epochs:
        return False
    return all(done - max(best, floor) >= patience for best in best_epochs)


class Trainer:
    """The bookkeeping around a training loop over ``models`` for ``epochs`` epochs.

    ``generator`` draws the batch shuffles. With ``resume`` and a saved state at
    ``state_path``, the models, the optimizer, the best epochs so far and the random state
    are restored and ``epochs()`` starts after the last finished epoch. ``signature``
    identifies config + data; a saved state with another signature is refused.

    Early stopping: with ``patience`` > 0, ``epochs()`` stops yielding once every model has
    gone ``patience`` epochs without a better validation W-F1, counting only epochs after
    the first ``stop_floor`` (distillation passes the epochs before its last curriculum
    stage, so a stage is never cut short). The epoch choice (best validation W-F1) is the
    same as without it; ``stopping()`` says where and why training ended.
    """

    def __init__(
        self,
        *,
        models: dict[str, DialogueModel],
        optimizer: torch.optim.Optimizer,
        epochs: int,
        val: SplitTensors,
        label_names: list[str],
        seed: int,
        state_path: Path | None = None,
        resume: bool = False,
        signature: str = "",
        on_epoch: Callable[[EpochLog], None] | None = None,
        patience: int = 0,
        stop_floor: int = 0,
    ):
        self.models = models
        self.patience = patience
        self.stop_floor = stop_floor
        self.stopped_at: int | None = None  # 1-based epoch after which training stopped early
        self.optimizer = optimizer
        self.num_epochs = epochs
        self.val = val
        self.label_names = label_names
        self.state_path = state_path
        self.signature = signature
        self.on_epoch = on_epoch
        self.generator = torch.Generator().manual_seed(seed)
        self.best: dict[str, Selected | None] = {n: None for n in models}
        self.history: list[dict[str, Any]] = []
        self.start = 0
        if resume and state_path is not None and state_path.is_file():
            self._restore(state_path)

    def epochs(self) -> Iterator[int]:
        """The 0-based epochs still to train; ends early when the patience runs out."""
        for epoch in range(self.start, self.num_epochs):
            if self.stopped_at is not None:
                return
            yield epoch

    def stopping(self) -> dict[str, Any]:
        """How training ended: epochs run, the early-stop epoch (None if it ran them all)
        and the reason, for checkpoints and JSON."""
        run = self.history[-1]["epoch"] if self.history else self.start
        if self.stopped_at is not None:
            reason = f"early stop: no better validation W-F1 in {self.patience} epochs" + (
                f" counted from epoch {self.stop_floor + 1}" if self.stop_floor else ""
            )
        else:
            reason = f"ran all {self.num_epochs} epochs"
        return {
            "epochs_run": run,
            "max_epochs": self.num_epochs,
            "patience": self.patience,
            "stopped_at": self.stopped_at,
            "stop_reason": reason,
        }

    def _patience_ran_out(self, epoch: int) -> bool:
        best = [s.epoch if s else 0 for s in self.best.values()]
        return patience_exhausted(epoch + 1, best, self.patience, self.stop_floor, self.num_epochs)

    def end_epoch(self, epoch: int, terms: dict[str, Tensor]) -> EpochLog:
        """Close 0-based ``epoch`` whose mean loss terms are ``terms`` (device tensors):
        check them, validate every model, keep the best epochs, save the state, report.

        Reading the losses is the epoch's one synchronisation with the device. A non-finite
        loss stops training before anything of this epoch is kept.
        """
        names = list(terms)
        values = torch.stack([terms[n].detach().float() for n in names]).cpu().tolist()
        losses = dict(zip(names, values))
        self._check_finite(epoch, losses)
        val_wf1: dict[str, float] = {}
        for name, model in self.models.items():
            report = evaluate(model, self.val, self.label_names)
            val_wf1[name] = report["weighted_f1"]
            current = self.best[name]
            if current is None or report["weighted_f1"] > current.val_metrics["weighted_f1"]:
                self.best[name] = Selected(
                    state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
                    epoch=epoch + 1,
                    val_metrics=report,
                )
        self.history.append({"epoch": epoch + 1, "losses": losses, "val_wf1": val_wf1})
        if self._patience_ran_out(epoch):
            self.stopped_at = epoch + 1
        if self.state_path is not None:
            self._save(epoch)
        log = EpochLog(
            epoch=epoch + 1,
            epochs=self.num_epochs,
            losses=losses,
            val_wf1=val_wf1,
            best_wf1={n: s.val_metrics["weighted_f1"] for n, s in self.best.items() if s},
        )
        if self.on_epoch is not None:
            self.on_epoch(log)
        return log

    def selected(self) -> dict[str, Selected]:
        """Each model's best epoch on validation."""
        stopping = self.stopping()
        result = {
            n: replace(s, stopping=stopping)
            for n, s in self.best.items()
            if s is not None
        }
        if len(result) != len(self.models):
            raise MRDRunError("Training finished without a single epoch; check 'epochs'.")
        return result

    def _check_finite(self, epoch: int, losses: dict[str, float]) -> None:
        # Name the term that broke, not the total that merely inherits it.
        bad = [n for n, v in losses.items() if n != "total" and not np.isfinite(v)] or [
            n for n, v in losses.items() if not np.isfinite(v)
        ]
        if bad:
            where = f" The last good state (epoch {epoch}) is in {self.state_path}." if epoch else ""
            raise MRDRunError(
                f"Loss term '{bad[0]}' became non-finite at epoch {epoch + 1}; training stopped "
                f"and nothing from this epoch was saved.{where} Lower the learning rate or "
                "check the features."
            )

    def _save(self, epoch: int) -> None:
        atomic_torch_save(
            {
                "signature": self.signature,
                "epoch": epoch + 1,
                "models": {n: m.state_dict() for n, m in self.models.items()},
                "optimizer": self.optimizer.state_dict(),
                "best": {
                    n: None if s is None else copy.copy(s.__dict__) for n, s in self.best.items()
                },
                "history": self.history,
                "stopped_at": self.stopped_at,
                "rng": _cpu_rng_states(self.generator),
            },
            self.state_path,
        )

    def _restore(self, state_path: Path) -> None:
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            stored_signature = state.get("signature")
        except Exception as exc:  # any unreadable file: corrupt, truncated, foreign
            raise MRDError(
                f"The saved training state {state_path} is unreadable ({type(exc).__name__}); "
                "delete it or run without --resume to start over."
            ) from None
        if stored_signature != self.signature:
            raise MRDError(
                f"The saved training state {state_path} comes from another config, data or "
                "seed; run without --resume to start over."
            )
        for name, model in self.models.items():
            model.load_state_dict(state["models"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, sel in state["best"].items():
            self.best[name] = Selected(**sel) if sel is not None else None
        self.history = state["history"]
        self.stopped_at = state.get("stopped_at")
        _restore_rng(state["rng"], self.generator)
        self.start = int(state["epoch"])


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

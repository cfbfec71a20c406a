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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mrd_cli.core.losses import class_weights_from_labels, classification_loss
from mrd_cli.core.metrics import classification_report
from mrd_cli.core.stats import gain_probability
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
    # Predicted class of every validation utterance (flat, CPU), for the start guard.
    val_predictions: Tensor | None = None
    # How the training ended (``Trainer.stopping()``): epochs run, early stop or not, why.
    stopping: dict[str, Any] | None = None
    # The model's validation W-F1 and the mean loss terms of every epoch run
    # (``Trainer.model_history``); checkpoints keep it for ``mrd plot``.
    history: list[dict[str, Any]] | None = None


@dataclass
class EpochLog:
    """What the progress display shows after each epoch."""

    epoch: int  # 1-based
    epochs: int
    losses: dict[str, float]
    val_wf1: dict[str, float]
    best_wf1: dict[str, float]
    # Validation W-F1 of the starting weights when they are a candidate (distillation), so
    # a display can tell the start from the top trained epoch, which a guard may reject.
    start_wf1: dict[str, float] = field(default_factory=dict)


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


def evaluate_with_predictions(
    model: DialogueModel, data: SplitTensors, label_names: list[str]
) -> tuple[dict[str, Any], Tensor]:
    """Metrics of ``model`` on a split and its predicted class of every real utterance
    (flat, CPU); the labels are used only to score predictions."""
    preds = predict(model, data)[data.mask].cpu()
    y_true = data.labels[data.mask].cpu().numpy()
    return classification_report(y_true, preds.numpy(), label_names), preds


def evaluate(model: DialogueModel, data: SplitTensors, label_names: list[str]) -> dict[str, Any]:
    """Metrics of ``model`` on a split; the labels are used only to score predictions."""
    return evaluate_with_predictions(model, data, label_names)[0]


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


class TrainingStep:
    """A recipe's training step (``recipes.pretrain.ClassifierStep``,
    ``recipes.distill.DistillStep``, ``recipes.selftrain.SemiStep``): the models it trains,
    their optimizer, the names of the logged loss terms (``terms``, ``"total"`` first), the
    batches of an epoch and the loss terms of a batch. ``update`` is the one optimizer step
    every loop takes."""

    models: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    terms: tuple[str, ...]

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[Any]:
        """The shuffled batches of 0-based ``epoch`` (the shuffle drawn from ``generator``)."""
        raise NotImplementedError

    def loss(self, batch: Any) -> dict[str, Tensor]:
        """Every loss term of ``batch`` by name; ``"total"`` is the one minimised."""
        raise NotImplementedError

    def update(self, batch: Any) -> Tensor:
        """One optimizer step on ``batch``; its loss terms stacked in the order of ``terms``."""
        terms = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        return torch.stack([terms[t] for t in self.terms]).detach()


def train_epoch(
    step: TrainingStep, batches: Iterable[Any], device: torch.device
) -> dict[str, Tensor]:
    """The recipes' inner loop: the models in training mode, ``step.update`` on each of an
    epoch's ``batches``, and the epoch's mean of each loss term (device tensors, read by
    ``Trainer.end_epoch``). ``benchmarks/throughput.py`` times this very loop."""
    for model in step.models.values():
        model.train()
    sums, count = torch.zeros(len(step.terms), device=device), 0
    for batch in batches:
        sums += step.update(batch)
        count += 1
    return mean_terms(step.terms, sums, count)


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
        start_candidate: bool = False,
        start_confidence: float = 0.0,
        patience: int = 0,
        stop_floor: int = 0,
        after_epoch: Callable[[int, dict[str, DialogueModel]], None] | None = None,
    ):
        self.models = models
        # Called with (epoch, models) once the epoch is closed: a diagnostic's hook
        # (``core.protocol_gap.TestWatch``); nothing the trainer keeps or selects reads it.
        self.after_epoch = after_epoch
        self.seed = seed
        self.start_confidence = start_confidence
        # Per model: the outcome of the start guard (see ``selected``).
        self.start_guard: dict[str, dict[str, Any]] = {}
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
        self.start_selected: dict[str, Selected | None] = {}
        self.start = 0
        if resume and state_path is not None and state_path.is_file():
            self._restore(state_path)
        elif start_candidate:
            self._add_start_candidates()

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
            report, preds = self._validate(model)
            val_wf1[name] = report["weighted_f1"]
            current = self.best[name]
            if current is None or report["weighted_f1"] > current.val_metrics["weighted_f1"]:
                self.best[name] = Selected(
                    state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
                    epoch=epoch + 1,
                    val_metrics=report,
                    val_predictions=preds,
                )
        self.history.append({"epoch": epoch + 1, "losses": losses, "val_wf1": val_wf1})
        if self._patience_ran_out(epoch):
            self.stopped_at = epoch + 1
        if self.state_path is not None:
            self._save(epoch)
        if self.after_epoch is not None:
            self.after_epoch(epoch, self.models)
        log = EpochLog(
            epoch=epoch + 1,
            epochs=self.num_epochs,
            losses=losses,
            val_wf1=val_wf1,
            best_wf1={n: s.val_metrics["weighted_f1"] for n, s in self.best.items() if s},
            start_wf1={
                n: s.val_metrics["weighted_f1"] for n, s in self.start_selected.items() if s
            },
        )
        if self.on_epoch is not None:
            self.on_epoch(log)
        return log

    def _add_start_candidates(self) -> None:
        """Validate the models as they are before any training and make them the best so
        far, as "epoch 0": a later epoch is chosen only if it beats them."""
        val_wf1 = {}
        for name, model in self.models.items():
            report, preds = self._validate(model)
            val_wf1[name] = report["weighted_f1"]
            self.best[name] = Selected(
                state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
                epoch=0,
                val_metrics=report,
                val_predictions=preds,
            )
        self.history.append({"epoch": 0, "losses": {}, "val_wf1": val_wf1})
        self.start_selected = dict(self.best)

    def _validate(self, model: DialogueModel) -> tuple[dict[str, Any], Tensor]:
        """Validation metrics of ``model`` and its flat predictions (CPU)."""
        return evaluate_with_predictions(model, self.val, self.label_names)

    def model_history(self, name: str) -> list[dict[str, Any]]:
        """Model ``name``'s epochs: 1-based ``epoch`` (0: before training, when the start
        was a candidate), its ``val_weighted_f1`` and the epoch's mean loss ``losses``
        (shared by the models trained together)."""
        return [
            {"epoch": h["epoch"], "val_weighted_f1": h["val_wf1"][name], "losses": h["losses"]}
            for h in self.history
        ]

    def start_val_wf1(self) -> dict[str, float] | None:
        """Each model's validation W-F1 before training, if it was a candidate."""
        first = self.history[0] if self.history else None
        return dict(first["val_wf1"]) if first and first["epoch"] == 0 else None

    def selected(self) -> dict[str, Selected]:
        """Each model's best epoch on validation.

        With a start candidate and ``start_confidence`` > 0, a trained epoch replaces the
        starting weights only if a paired bootstrap over validation dialogues gives it the
        higher W-F1 in at least that share of resamples: a gain within the validation
        split's noise keeps the starting weights (``start_guard`` says what was decided).
        """
        for name, best in self.best.items():
            start = self.start_selected.get(name)
            if start is None or best is None or best.epoch == 0 or self.start_confidence <= 0:
                continue
            p_gain = self._gain_probability(best, start)
            kept = p_gain < self.start_confidence
            self.start_guard[name] = {
                "best_epoch": best.epoch,
                "best_val_weighted_f1": best.val_metrics["weighted_f1"],
                "start_val_weighted_f1": start.val_metrics["weighted_f1"],
                "p_gain": p_gain,
                "required": self.start_confidence,
                "kept_start": kept,
            }
            if kept:
                self.best[name] = start
        stopping = self.stopping()
        result = {
            n: replace(s, stopping=stopping, history=self.model_history(n))
            for n, s in self.best.items()
            if s is not None
        }
        if len(result) != len(self.models):
            raise MRDRunError("Training finished without a single epoch; check 'epochs'.")
        return result

    def _gain_probability(self, new: Selected, old: Selected) -> float:
        mask = self.val.mask.cpu()
        dialogue = torch.nonzero(mask)[:, 0].numpy()
        y_true = self.val.labels.cpu()[mask].numpy()
        return gain_probability(
            y_true,
            new.val_predictions.numpy(),
            old.val_predictions.numpy(),
            dialogue,
            len(self.label_names),
            seed=self.seed,
        )

    def _check_finite(self, epoch: int, losses: dict[str, float]) -> None:
        # Name the term that broke, not the total that merely inherits it.
        bad = [n for n, v in losses.items() if n != "total" and not np.isfinite(v)] or [
            n for n, v in losses.items() if not np.isfinite(v)
        ]
        if bad:
            where = (
                f" The last good state (epoch {epoch}) is in {self.state_path}." if epoch else ""
            )
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
                "start": {
                    n: None if s is None else copy.copy(s.__dict__)
                    for n, s in self.start_selected.items()
                },
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
        try:
            for name, model in self.models.items():
                model.load_state_dict(state["models"][name])
            self.optimizer.load_state_dict(state["optimizer"])
            for name, sel in state["best"].items():
                self.best[name] = Selected(**sel) if sel is not None else None
            if not isinstance(state["history"], list):
                raise TypeError("history is not a list")
            self.history = state["history"]
            self.start_selected = {
                n: Selected(**sel) if sel is not None else None
                for n, sel in state.get("start", {}).items()
            }
            self.stopped_at = state.get("stopped_at")
            _restore_rng(state["rng"], self.generator)
            epoch = state["epoch"]
            total = self.num_epochs
            if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= total:
                raise ValueError(f"epoch {epoch!r} is outside 0..{total}")
            self.start = epoch
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            raise MRDError(
                f"The saved training state {state_path} is damaged ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); delete it or run without --resume to "
                "start over."
            ) from None


def state_matches(state_path: Path, signature: str) -> bool:
    """Whether ``state_path`` holds a readable training state saved under ``signature``
    (one that resuming would accept); False for a missing, unreadable or foreign file."""
    if not state_path.is_file():
        return False
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        return isinstance(state, dict) and state.get("signature") == signature
    except Exception:  # any unreadable file: corrupt, truncated, foreign
        return False


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

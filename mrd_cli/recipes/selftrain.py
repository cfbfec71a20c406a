"""Recipe: MER2024-SEMI's semi-supervised training with few labels (`mrd selftrain`).

1. The label budget: the labels of a seeded share of the training dialogues are kept; the
   other dialogues' labels are hidden (zeroed, ``core/selftrain.py: hide_labels``) and they
   form the unlabelled pool (with ``transductive``, the test dialogues' features join it).
2. Contrastive pretraining of the modality encoders on labelled and pool dialogues:
   NT-Xent between modalities and between original and noised inputs.
3. Round 0: supervised training from the contrastive weights on the labelled utterances
   (the soft vote's L_cls + every head's cross-entropy + L_reg), epoch chosen on validation.
4. Rounds 1..R: the last round's model labels the pool; an utterance is accepted when its
   voted probability exceeds its class's threshold; the model is trained again from the
   contrastive weights on labelled + accepted utterances. A round that accepts nothing ends
   the run with a message.

Each round writes a checkpoint ``RUN/selftrain/rounds/<role>.round<k>.pt``; the result,
``RUN/selftrain/<role>.pt``, is the last round's (or, with ``select: val``, the round with
the best validation W-F1). The hidden labels are read for one thing only, the accuracy of the
accepted pseudo-labels, reported as a diagnostic that no choice depends on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mrd_cli.config import SelftrainConfig
from mrd_cli.core.checkpoint import copy_checkpoint, save_checkpoint
from mrd_cli.core.device import seed_everything
from mrd_cli.core.events import OnEvent, emit, epoch_events
from mrd_cli.core.losses import class_weights_from_labels, classification_loss, l2_penalty
from mrd_cli.core.selftrain import (
    accept_pseudo_labels,
    class_thresholds,
    concat_splits,
    contrastive_loss,
    hide_labels,
    label_budget,
    noise_schedule,
)
from mrd_cli.core.session import Session, role_seed, signature
from mrd_cli.core.tracking import recorder
from mrd_cli.core.training import EpochLog, Trainer, TrainingStep, predict_logits, train_epoch
from mrd_cli.data.tensors import Batch, SplitTensors
from mrd_cli.errors import MRDError, MRDRunError
from mrd_cli.io import MAX_JSON_BYTES, atomic_torch_save, atomic_write_json, read_limited
from mrd_cli.models.dialogue import run_model
from mrd_cli.models.semi import SemiModel

TERMS = ("total", "cls", "heads", "reg")
CONTRASTIVE_TERMS = ("total", "modal", "noise")
TRANSDUCTIVE_NOTE = (
    "TRANSDUCTIVE: the test dialogues' features (never their labels) were pseudo-labelled "
    "and trained on; test scores of this model are not comparable with inductive ones"
)


@dataclass
class SelftrainResult:
    """What `mrd selftrain` did: the label budget, each round, and the chosen checkpoint."""

    dataset: str
    role: str
    labeled_fraction: float
    transductive: bool
    labelled_dialogues: int
    pool_dialogues: int
    pool_utterances: int
    contrastive: dict[str, Any]
    rounds: list[dict[str, Any]]
    selected_round: int
    checkpoint: Path
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "checkpoint": str(self.checkpoint)}  # fields in order
        if self.transductive:
            out["note"] = TRANSDUCTIVE_NOTE
        return out


@dataclass
class Pool:
    """The unlabelled dialogues (labels hidden) and, apart, their true labels for the
    diagnostic only."""

    data: SplitTensors | None
    truth: Tensor | None

    @property
    def dialogues(self) -> int:
        return 0 if self.data is None else self.data.num_dialogues

    @property
    def utterances(self) -> int:
        return 0 if self.data is None else self.data.num_utterances


def selftrain(
    session: Session,
    role: str = "multi",
    resume: bool = False,
    on_event: OnEvent | None = None,
) -> SelftrainResult:
    """Label budget, contrastive pretraining, round 0 and the self-training rounds of a
    ``role`` model (multi: every configured modality; text: the text alone).

    With ``resume``, finished rounds (and a finished contrastive phase) are kept and an
    interrupted round continues from its last finished epoch. ``on_event`` gets the
    ``epoch`` events of the contrastive phase and of each round ("multi round 1"), a
    ``round`` event per finished round (payload: its report) and a ``note`` per message.
    """
    cfg, st = session.cfg, session.cfg.selftrain
    record = recorder(session, "selftrain", {"model": role}, "round 0")  # per-epoch metrics
    on_event = record.keyed(on_event, f"{role} ")  # each round its own segment
    messages: list[str] = []
    thresholds = class_thresholds(session.corpus.label_names, st.thresholds, st.default_threshold)

    def say(message: str) -> None:
        messages.append(message)
        emit(on_event, "note", text=message)

    train = session.tensors("train")
    budget = label_budget(train.num_dialogues, st.labeled_fraction, cfg.seed)
    labelled = train.subset(budget.labelled)
    pool = _pool(session, train, budget.hidden, st.transductive)
    seed = role_seed(cfg, role, cfg.seed)
    sig = signature(
        "selftrain", role, cfg.dataset, cfg.model, asdict(st), seed, session.corpus.fingerprint()
    )
    state_path = session.run.selftrain_dir / f".{role}.rounds.json"
    state = _read_state(state_path, sig) if resume else {"signature": sig, "rounds": []}

    seed_everything(seed)
    model = session.build_model(role, backbone="semi")
    assert isinstance(model, SemiModel)
    everything = train.select(model.modalities)  # features only: no label is read from it
    model.set_input_stats(everything.features, everything.mask)
    contrastive = _contrastive_phase(
        session, model, role, [labelled, pool.data], seed, sig, resume, on_event
    )
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}

    pseudo: tuple[Tensor, Tensor] | None = None  # pool labels and accepted, for the next round
    done: list[dict[str, Any]] = state["rounds"]
    rounds: list[dict[str, Any]] = []
    for r in range(st.rounds + 1):
        ckpt_path = session.run.selftrain_round(role, r)
        if r < len(done):
            if not ckpt_path.is_file():
                raise MRDError(
                    f"Round {r} of the interrupted run is recorded in {state_path} but its "
                    f"checkpoint {ckpt_path} is missing; run without --resume to start over."
                )
            model.load_state_dict(torch.load(ckpt_path, weights_only=True)["state_dict"])
            report = done[r]
        else:
            data, active = _training_data(labelled, pool.data, pseudo)
            seed_everything(seed + 7919 * r)
            model.load_state_dict(start)
            report = _train_round(
                session, model, role, r, data, active, seed + 7919 * r, sig, resume, on_event
            )
            report["pseudo_labelled_utterances"] = int(active.sum()) - labelled.num_utterances
            report["checkpoint"] = str(ckpt_path)
        rounds.append(report)
        if r == st.rounds:
            break
        if pool.data is None:
            say(
                "The unlabelled pool is empty (labeled_fraction 1.0 and not transductive): "
                "no self-training round; the result is the supervised round 0."
            )
            break
        pseudo = _pseudo_label(model, pool.data, thresholds)
        if r >= len(done):
            report["accepted"] = _accepted_report(pseudo, pool.truth, session.corpus.label_names)
            report["thresholds"] = dict(zip(session.corpus.label_names, thresholds.tolist()))
            done.append(report)
            atomic_write_json(state_path, state)
            emit(on_event, "round", payload=report)
        if not bool(pseudo[1].any()):
            say(
                f"Round {r + 1}: no pool utterance passed its class threshold "
                f"({_thresholds_text(session.corpus.label_names, thresholds)}); self-training "
                f"ends after round {r}."
            )
            break
    if len(done) < len(rounds):  # the last round, which labels no pool
        done.append(rounds[-1])
        atomic_write_json(state_path, state)
        emit(on_event, "round", payload=rounds[-1])
    chosen = _select_round(rounds, st.select)
    why = f"self-training round {chosen} (selftrain.select = {st.select})"
    copy_checkpoint(session.run.selftrain_round(role, chosen), session.run.selftrained(role), why)
    record.finish({role: session.run.selftrained(role)})
    session.run.save_config(cfg)
    if pool.data is not None and st.transductive:
        say(TRANSDUCTIVE_NOTE + ".")
    return SelftrainResult(
        dataset=session.corpus.name,
        role=role,
        labeled_fraction=st.labeled_fraction,
        transductive=st.transductive,
        labelled_dialogues=labelled.num_dialogues,
        pool_dialogues=pool.dialogues,
        pool_utterances=pool.utterances,
        contrastive=contrastive,
        rounds=rounds,
        selected_round=chosen,
        checkpoint=session.run.selftrained(role),
        messages=messages,
    )


def _pool(session: Session, train: SplitTensors, hidden: Any, transductive: bool) -> Pool:
    """The hidden-label training dialogues, plus the test dialogues when transductive."""
    parts: list[SplitTensors] = []
    if len(hidden):
        parts.append(train.subset(hidden))
    if transductive:
        parts.append(session.tensors("test"))
    if not parts:
        return Pool(None, None)
    data = concat_splits(parts)
    return Pool(hide_labels(data), data.labels)


def _contrastive_phase(
    session: Session,
    model: SemiModel,
    role: str,
    parts: list[SplitTensors | None],
    seed: int,
    sig: str,
    resume: bool,
    on_event: OnEvent | None,
) -> dict[str, Any]:
    """NT-Xent pretraining of the encoders on labelled and pool dialogues; its weights are
    saved (``RUN/selftrain/.<role>.contrastive.pt``) so that a resumed run skips it."""
    st = session.cfg.selftrain
    path = session.run.selftrain_dir / f".{role}.contrastive.pt"
    if resume and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("signature") == sig:
            model.load_state_dict(saved["state_dict"])
            return saved["summary"]
    if st.contrastive_epochs == 0:
        return {"epochs": 0, "losses": None}
    data = concat_splits([p for p in parts if p is not None]).select(model.modalities)
    abar = noise_schedule(st.noise_steps, st.beta_start, st.beta_end)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=st.contrastive_lr)
    losses: dict[str, float] = {}
    for epoch in range(st.contrastive_epochs):
        model.train()
        sums, count = torch.zeros(len(CONTRASTIVE_TERMS), device=session.device), 0
        for batch in data.batches(st.batch_size, generator):
            terms = contrastive_loss(
                model,
                batch.features,
                batch.lengths,
                batch.mask.shape[1],
                abar,
                st.temperature,
                generator,
            )
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            sums += torch.stack([terms[t] for t in CONTRASTIVE_TERMS]).detach()
            count += 1
        losses = dict(zip(CONTRASTIVE_TERMS, (sums / max(count, 1)).cpu().tolist()))
        if not all(torch.isfinite(torch.tensor(list(losses.values())))):
            raise MRDRunError(
                f"The contrastive loss became non-finite at epoch {epoch + 1}; lower "
                "selftrain.contrastive_lr or check the features."
            )
        emit(
            on_event,
            "epoch",
            task=f"{role} contrastive",
            log=EpochLog(epoch + 1, st.contrastive_epochs, losses, {}, {}),
        )
    summary = {"epochs": st.contrastive_epochs, "losses": losses}
    atomic_torch_save(
        {"signature": sig, "state_dict": model.state_dict(), "summary": summary}, path
    )
    return summary


def _training_data(
    labelled: SplitTensors, pool: SplitTensors | None, pseudo: tuple[Tensor, Tensor] | None
) -> tuple[SplitTensors, Tensor]:
    """The round's training dialogues and which utterances are supervised: every labelled
    utterance, and the accepted pool utterances with their pseudo-labels (pool dialogues
    without an accepted utterance are left out)."""
    if pool is None or pseudo is None:
        return labelled, labelled.mask
    labels, accepted = pseudo
    rows = torch.nonzero(accepted.any(1)).flatten().cpu().numpy()
    chosen = pool.subset(rows)
    length = chosen.mask.shape[1]
    chosen.labels = labels[torch.as_tensor(rows, device=labels.device), :length]
    data = concat_splits([labelled, chosen])
    pseudo_active = accepted[torch.as_tensor(rows, device=accepted.device), :length]
    active = concat_splits(
        [_with_labels(labelled, labelled.mask), _with_labels(chosen, pseudo_active)]
    ).mask
    return data, active


def _with_labels(data: SplitTensors, mask: Tensor) -> SplitTensors:
    """``data`` with ``mask`` in place of its mask (to pad an active mask like the data)."""
    return SplitTensors(data.ids, {}, data.speakers, data.labels, mask, data.lengths)


def _train_round(
    session: Session,
    model: SemiModel,
    role: str,
    r: int,
    data: SplitTensors,
    active: Tensor,
    seed: int,
    sig: str,
    resume: bool,
    on_event: OnEvent | None,
) -> dict[str, Any]:
    """Supervised training of round ``r`` on the ``active`` utterances of ``data``; the
    epoch is chosen on validation W-F1. Writes the round's checkpoint."""
    st = session.cfg.selftrain
    step = SemiStep(model, data, active, st, session.corpus.num_classes)
    key = f"{role} round {r}"
    trainer = Trainer(
        models={"model": model},
        optimizer=step.optimizer,
        epochs=st.epochs,
        val=session.tensors("val"),
        label_names=session.corpus.label_names,
        seed=seed,
        state_path=session.run.selftrain_dir / f".{role}.round{r}.state.pt",
        resume=resume,
        signature=signature(sig, r, int(active.sum())),
        on_epoch=epoch_events(on_event, key),
        patience=st.patience,
        stop_floor=st.epochs // 2,
    )
    for epoch in trainer.epochs():
        terms = train_epoch(step, step.batches(epoch, trainer.generator), session.device)
        trainer.end_epoch(epoch, terms)
    selected = trainer.selected()["model"]
    model.load_state_dict(selected.state_dict)
    labelled = int(active.sum())
    save_checkpoint(
        session.run.selftrain_round(role, r),
        model,
        selected.state_dict,
        **session.checkpoint_meta(
            "pretrain",
            role,
            selected,
            selftrain={
                "round": r,
                "labeled_fraction": st.labeled_fraction,
                "transductive": st.transductive,
                "supervised_utterances": labelled,
            },
        ),
    )
    (session.run.selftrain_dir / f".{role}.round{r}.state.pt").unlink(missing_ok=True)
    return {
        "round": r,
        "epoch": selected.epoch,
        "val_weighted_f1": selected.val_metrics["weighted_f1"],
        "supervised_utterances": labelled,
        "stopping": selected.stopping,
    }


class SemiStep(TrainingStep):
    """One supervised step of a round: L_cls on the soft vote + the heads' cross-entropy
    (``heads``) + L_reg, on the active (labelled or accepted) utterances only."""

    terms = TERMS

    def __init__(
        self,
        model: SemiModel,
        data: SplitTensors,
        active: Tensor,
        cfg: SelftrainConfig,
        num_classes: int,
    ):
        self.model = model
        self.models = {"model": model}
        self.data = data.select(model.modalities)
        self.active = active
        self.cfg = cfg
        self.weights = (
            class_weights_from_labels(data.labels, active, num_classes)
            if cfg.loss == "weighted_ce"
            else None
        )
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        return self.data.batches(self.cfg.batch_size, generator)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        logits = run_model(self.model, batch)
        act = self.active[batch.index, : batch.mask.shape[1]] & batch.mask
        heads = self.model.aux_losses(batch.labels, act)["heads"]
        cls = classification_loss(logits, batch.labels, act, self.weights)
        reg = l2_penalty(self.model.parameters(), self.cfg.l2)
        return {"total": cls + heads + reg, "cls": cls, "heads": heads, "reg": reg}


@torch.no_grad()
def _pseudo_label(
    model: SemiModel, pool: SplitTensors, thresholds: Tensor
) -> tuple[Tensor, Tensor]:
    """The voted class of every pool utterance and whether it passed its threshold."""
    probs = torch.softmax(predict_logits(model, pool), dim=-1)
    return accept_pseudo_labels(probs, pool.mask, thresholds)


def _accepted_report(
    pseudo: tuple[Tensor, Tensor], truth: Tensor | None, label_names: list[str]
) -> dict[str, Any]:
    """Accepted utterances per (pseudo-)class and, as a diagnostic only, the share whose
    pseudo-label equals the hidden label."""
    labels, accepted = pseudo
    picked = labels[accepted].cpu()
    counts = torch.bincount(picked, minlength=len(label_names)).tolist()
    out: dict[str, Any] = {
        "total": int(accepted.sum()),
        "by_class": dict(zip(label_names, counts)),
        "diagnostic_accuracy": None,
        "diagnostic_accuracy_by_class": {},
    }
    if truth is not None and len(picked):
        right = (picked == truth[accepted].cpu()).float()
        out["diagnostic_accuracy"] = 100.0 * float(right.mean())
        out["diagnostic_accuracy_by_class"] = {
            name: 100.0 * float(right[picked == c].mean())
            for c, name in enumerate(label_names)
            if counts[c]
        }
    return out


def _select_round(rounds: list[dict[str, Any]], how: str) -> int:
    if how == "val":
        return max(rounds, key=lambda r: (r["val_weighted_f1"], -r["round"]))["round"]
    return rounds[-1]["round"]


def _thresholds_text(names: list[str], thresholds: Tensor) -> str:
    return ", ".join(f"{n} > {t:.2f}" for n, t in zip(names, thresholds.tolist()))


def _read_state(path: Path, sig: str) -> dict[str, Any]:
    """The finished rounds of an interrupted run (none if there is no state)."""
    if not path.is_file():
        return {"signature": sig, "rounds": []}
    try:
        state = json.loads(read_limited(path, MAX_JSON_BYTES, "self-training state"))
    except (OSError, ValueError) as exc:
        raise MRDError(
            f"The saved self-training state {path} is unreadable ({type(exc).__name__}); delete "
            "it or run without --resume to start over."
        ) from None
    if not isinstance(state, dict) or state.get("signature") != sig:
        raise MRDError(
            f"The saved self-training state {path} comes from another config, data or seed; "
            "run without --resume to start over."
        )
    return state

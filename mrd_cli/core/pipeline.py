"""The pipeline steps as library functions ("recipes"): pretrain, evaluate, and helpers.

Each CLI subcommand is a thin layer over one function here; the functions take a
``Session`` (config, corpus, run directory, device) and callbacks for progress, and never
parse arguments or print.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrd_cli.config import Config
from mrd_cli.core.checkpoint import (
    check_matches_corpus,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from mrd_cli.core.curriculum import Curriculum
from mrd_cli.core.device import seed_everything
from mrd_cli.core.io import atomic_write_json, file_sha256
from mrd_cli.core.metrics import ambiguity_table, classification_report
from mrd_cli.core.mrd import distill_pair
from mrd_cli.core.partition import (
    GROUP_CODE,
    GROUPS,
    fold_assignment,
    group_counts,
    partition_by_agreement,
)
from mrd_cli.core.rundir import ROLES, RunDir
from mrd_cli.core.training import EpochLog, Selected, fit_classifier, predict
from mrd_cli.data.corpus import Corpus
from mrd_cli.data.tensors import SplitTensors, split_tensors
from mrd_cli.errors import MRDError
from mrd_cli.models.dialogue import DialogueModel, ModelSpec


@dataclass
class Session:
    """Everything a step needs: the effective config, the data, where files go, the device."""

    cfg: Config
    corpus: Corpus
    run: RunDir
    device: torch.device

    def tensors(self, split: str) -> SplitTensors:
        """A split on the device (cached: built once per command)."""
        cache = self.__dict__.setdefault("_tensors", {})
        if split not in cache:
            cache[split] = split_tensors(self.corpus, split, self.device)
        return cache[split]

    def derive(self, cfg: Config, run: RunDir) -> Session:
        """The same data and device with another config or run directory, sharing the
        device tensors already built (same corpus, so the same tensors)."""
        other = Session(cfg=cfg, corpus=self.corpus, run=run, device=self.device)
        other.__dict__["_tensors"] = self.__dict__.setdefault("_tensors", {})
        return other


def role_modalities(cfg: Config, role: str) -> list[str]:
    """M_multi sees every configured modality; M_text sees the text alone."""
    return list(cfg.dataset.modalities) if role == "multi" else ["text"]


def build_model(corpus: Corpus, cfg: Config, role: str, device: torch.device) -> DialogueModel:
    mods = role_modalities(cfg, role)
    dims = corpus.input_dims
    spec = ModelSpec(
        modalities=mods,
        input_dims={m: dims[m] for m in mods},
        num_speakers=corpus.num_speakers,
        num_classes=corpus.num_classes,
        hidden=cfg.model.hidden,
        encoder=cfg.model.encoder,
        layers=cfg.model.layers,
        heads=cfg.model.heads,
        dropout=cfg.model.dropout,
    )
    return DialogueModel(spec).to(device)


def signature(*parts: Any) -> str:
    """A hash of config sections, data fingerprint and seed: what a resumed state must match."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_meta(
    session: Session, stage: str, role: str, selected: Selected, **extra: Any
) -> dict[str, Any]:
    return {
        "stage": stage,
        "role": role,
        "dataset": session.corpus.name,
        "label_names": session.corpus.label_names,
        "data_fingerprint": session.corpus.fingerprint(),
        "seed": session.cfg.seed,
        "epoch": selected.epoch,
        "val_metrics": selected.val_metrics,
        "config": session.cfg.to_dict(),
        **extra,
    }


def pretrain_role(
    session: Session,
    role: str,
    train: SplitTensors,
    val: SplitTensors,
    seed: int,
    state_path: Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> tuple[DialogueModel, Selected]:
    """Train one fresh model of ``role`` on ``train``; returns it with its selected epoch."""
    cfg = session.cfg
    seed_everything(seed)
    model = build_model(session.corpus, cfg, role, session.device)
    sig = signature(
        "pretrain", role, cfg.dataset, cfg.model, cfg.pretrain, seed, session.corpus.fingerprint()
    )
    selected = fit_classifier(
        model,
        train,
        val,
        cfg.pretrain,
        session.corpus.label_names,
        seed,
        state_path=state_path,
        resume=resume,
        signature=sig,
        on_epoch=on_epoch,
    )
    model.load_state_dict(selected.state_dict)
    return model, selected


def pretrain(
    session: Session,
    roles: tuple[str, ...] = ROLES,
    resume: bool = False,
    on_epoch: Callable[[str, EpochLog], None] | None = None,
) -> dict[str, Selected]:
    """Pretrain M_multi and/or M_text; writes ``RUN/pretrain/<role>.pt``.

    With ``resume``, a role with a saved training state continues from its last finished
    epoch, and a role whose checkpoint was already finished with this data, config and seed
    is kept as it is.
    """
    results = {}
    train, val = session.tensors("train"), session.tensors("val")
    for role in roles:
        state_path = session.run.training_state("pretrain", role)
        finished = _current_pretrained(session, role) if resume else None
        if finished is not None and not state_path.is_file():
            results[role] = Selected(
                state_dict=finished["state_dict"],
                epoch=finished["epoch"],
                val_metrics=finished["val_metrics"],
            )
            continue
        model, selected = pretrain_role(
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
            selected.state_dict,
            **checkpoint_meta(session, "pretrain", role, selected),
        )
        state_path.unlink(missing_ok=True)
        results[role] = selected
    session.run.save_config(session.cfg)
    return results


def load_model(session: Session, path: Path, made_by: str) -> tuple[DialogueModel, dict]:
    """Load a checkpoint, check it against the loaded data, rebuild its model."""
    ckpt = load_checkpoint(path, made_by)
    check_matches_corpus(ckpt, session.corpus)
    return model_from_checkpoint(ckpt, session.device), ckpt


def find_checkpoints(run: RunDir) -> dict[str, Path]:
    """Checkpoints present in the run directory, named as in DESIGN.md section 5."""
    found = {}
    for stage, path_of in (("pretrain", run.pretrained), ("distill", run.distilled)):
        for role in ROLES:
            if path_of(role).is_file():
                found[f"{stage}/{role}"] = path_of(role)
    return found


def evaluate_checkpoints(
    session: Session, checkpoints: dict[str, Path], split: str = "test"
) -> dict[str, Any]:
    """Metrics of each checkpoint on ``split`` and the ambiguity table (DESIGN.md section 5).

    The ambiguity table compares the multimodal and the text model of the latest stage
    present (distill if both distilled models are given, else pretrain).
    """
    if not checkpoints:
        raise MRDError(
            f"No checkpoints in {session.run.root}. Run `mrd pretrain --dataset "
            f"{session.cfg.dataset.name}` first, or pass --checkpoint PATH."
        )
    data = session.tensors(split)
    y_true = data.labels[data.mask].cpu().numpy()
    labels = session.corpus.label_names
    models: dict[str, Any] = {}
    preds: dict[str, np.ndarray] = {}
    roles: dict[str, str] = {}
    for name, path in checkpoints.items():
        made_by = "mrd distill" if name.startswith("distill") else "mrd pretrain"
        model, ckpt = load_model(session, path, made_by)
        y_pred = predict(model, data)[data.mask].cpu().numpy()
        preds[name] = y_pred
        roles[name] = ckpt["role"]
        report = classification_report(y_true, y_pred, labels)
        report["epoch"] = ckpt.get("epoch")
        report["val_weighted_f1"] = (ckpt.get("val_metrics") or {}).get("weighted_f1")
        models[name] = report
    result: dict[str, Any] = {
        "dataset": session.corpus.name,
        "split": split,
        "labels": labels,
        "num_utterances": int(y_true.shape[0]),
        "models": models,
        "ambiguity": None,
    }
    pair = _ambiguity_pair(roles)
    if pair is not None:
        multi, text = pair
        result["ambiguity"] = ambiguity_table(y_true, preds[multi], preds[text], labels)
        result["ambiguity_models"] = {"multi": multi, "text": text}
    return result


def _ambiguity_pair(roles: dict[str, str]) -> tuple[str, str] | None:
    for stage in ("distill", "pretrain", ""):
        multi = [n for n, r in roles.items() if r == "multi" and n.startswith(stage)]
        text = [n for n, r in roles.items() if r == "text" and n.startswith(stage)]
        if multi and text:
            return multi[0], text[0]
    return None


def save_metrics(session: Session, result: dict[str, Any]) -> Path:
    path = session.run.metrics / f"{result['split']}.json"
    atomic_write_json(path, result)
    return path


# --------------------------------------------------------------------------------------
# partition


def partition(
    session: Session,
    method: str | None = None,
    folds: int | None = None,
    checkpoints: dict[str, Path] | None = None,
    on_epoch: Callable[[str, EpochLog], None] | None = None,
    on_fold: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Partition the training utterances into mcti / mitc / general / simple (Eq. 9-13).

    ``in_sample`` uses the pretrained checkpoints' predictions on the training split;
    ``cross_fit`` trains ``folds`` pairs of fold models (pretrain config) and uses each
    pair's predictions on the dialogues it did not see. Writes ``RUN/partition.json``.
    """
    cfg = session.cfg
    method = method or cfg.partition.method
    folds = folds or cfg.partition.folds
    paths = checkpoints or {r: session.run.pretrained(r) for r in ROLES}
    # Loading also checks both checkpoints against the data, whichever method runs.
    models = {
        role: load_model(session, paths[role], f"mrd pretrain --dataset {cfg.dataset.name}")[0]
        for role in ROLES
    }
    train = session.tensors("train")
    preds = {}
    if method == "in_sample":
        preds = {role: predict(models[role], train) for role in ROLES}
    else:
        preds = _cross_fitted_predictions(session, train, folds, on_epoch, on_fold)
    y_true = train.labels[train.mask].cpu().numpy()
    codes = partition_by_agreement(
        y_true, preds["multi"][train.mask].cpu().numpy(), preds["text"][train.mask].cpu().numpy()
    )
    counts = group_counts(codes, y_true, session.corpus.label_names)
    per_dialogue = np.split(codes, np.cumsum(train.lengths.numpy())[:-1])
    doc = {
        "format": "mrd-partition/1",
        "method": method,
        "folds": folds if method == "cross_fit" else None,
        "split": "train",
        "provenance": {
            "dataset": session.corpus.name,
            "data_fingerprint": session.corpus.fingerprint(),
            "checkpoints": {
                r: {"path": str(paths[r]), "sha256": file_sha256(paths[r])} for r in ROLES
            },
            "seed": cfg.seed,
            "pretrain_config": asdict(cfg.pretrain),
            "model_config": asdict(cfg.model),
        },
        "groups_order": list(GROUPS),
        "counts": counts,
        "totals": {g: sum(c.values()) for g, c in counts.items()},
        "groups": {
            did: [GROUPS[c] for c in dialogue_codes.tolist()]
            for did, dialogue_codes in zip(train.ids, per_dialogue)
        },
    }
    atomic_write_json(session.run.partition, doc)
    return doc


def _cross_fitted_predictions(
    session: Session,
    train: SplitTensors,
    folds: int,
    on_epoch: Callable[[str, EpochLog], None] | None,
    on_fold: Callable[[str], None] | None,
) -> dict[str, torch.Tensor]:
    """Out-of-fold predictions [D, L] of fold models for every training dialogue."""
    val = session.tensors("val")
    assignment = fold_assignment(train.num_dialogues, folds, session.cfg.seed)
    preds = {r: torch.zeros_like(train.labels) for r in ROLES}
    for k in range(folds):
        held = np.flatnonzero(assignment == k)
        fit_rows = np.flatnonzero(assignment != k)
        fit_part = train.subset(fit_rows)
        held_part = train.subset(held)
        for role in ROLES:
            key = f"fold {k + 1}/{folds} {role}"
            if on_fold:
                on_fold(key)
            model, _ = pretrain_role(
                session,
                role,
                fit_part,
                val,
                session.cfg.seed + 1000 * (k + 1),
                on_epoch=(lambda log, key=key: on_epoch(key, log)) if on_epoch else None,
            )
            fold_pred = predict(model, held_part)
            rows = torch.as_tensor(held, device=train.mask.device)
            preds[role][rows, : fold_pred.shape[1]] = fold_pred
    return preds


def load_partition(session: Session, paths: dict[str, Path]) -> dict[str, Any]:
    """Read ``RUN/partition.json`` and refuse one made from other checkpoints or data."""
    path = session.run.partition
    name = session.cfg.dataset.name
    if not path.is_file():
        raise MRDError(f"No partition at {path}. Run `mrd partition --dataset {name}` first.")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MRDError(f"{path} is corrupt. Run `mrd partition --dataset {name}` again.") from None
    if not isinstance(doc, dict) or doc.get("format") != "mrd-partition/1":
        raise MRDError(f"{path} is not an mrd partition file. Run `mrd partition` again.")
    if not _partition_is_well_formed(doc):
        raise MRDError(
            f"{path} is incomplete or was edited by hand. Run `mrd partition --dataset {name}` "
            "again."
        )
    prov = doc["provenance"]
    if prov["data_fingerprint"] != session.corpus.fingerprint():
        raise MRDError(
            f"{path} was made from other data than the data loaded now. "
            f"Rerun `mrd partition --dataset {name}`."
        )
    for role in ROLES:
        if prov["checkpoints"][role]["sha256"] != file_sha256(paths[role]):
            raise MRDError(
                f"{path} was made from other checkpoints than {paths[role]} (sha256 differs). "
                f"Rerun `mrd partition --dataset {name}` after pretraining."
            )
    return doc


def _partition_is_well_formed(doc: dict[str, Any]) -> bool:
    """The keys and types ``load_partition`` and ``distill`` read, with known group names."""
    prov = doc.get("provenance")
    groups = doc.get("groups")
    totals = doc.get("totals")
    if not (isinstance(prov, dict) and isinstance(groups, dict) and isinstance(totals, dict)):
        return False
    checkpoints = prov.get("checkpoints")
    return (
        "data_fingerprint" in prov
        and isinstance(checkpoints, dict)
        and all(isinstance(checkpoints.get(r), dict) and "sha256" in checkpoints[r] for r in ROLES)
        and set(totals) == set(GROUPS)
        and all(isinstance(v, int) for v in totals.values())
        and all(isinstance(g, list) and set(g) <= set(GROUPS) for g in groups.values())
    )


def partition_codes(doc: dict[str, Any], train: SplitTensors) -> torch.Tensor:
    """The partition as a [D, L] tensor of group codes aligned with the training tensors."""
    groups = doc["groups"]
    missing = [d for d in train.ids if d not in groups]
    if missing:
        raise MRDError(
            f"The partition has no groups for training dialogue '{missing[0]}'. "
            "Rerun `mrd partition`."
        )
    flat = np.array([GROUP_CODE[g] for d in train.ids for g in groups[d]], dtype=np.int64)
    if flat.shape[0] != train.num_utterances:
        raise MRDError(
            "The partition does not match the training utterances. Rerun `mrd partition`."
        )
    codes = torch.full_like(train.labels, GROUP_CODE["general"])
    codes[train.mask] = torch.as_tensor(flat, device=train.mask.device)
    return codes


# --------------------------------------------------------------------------------------
# distill


def distill(
    session: Session,
    resume: bool = False,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    out_dir: Path | None = None,
) -> dict[str, Selected]:
    """MRD on the pretrained pair; writes ``RUN/distill/multi.pt`` and ``text.pt``
    (or into ``out_dir``)."""
    cfg = session.cfg
    name = cfg.dataset.name
    paths = {r: session.run.pretrained(r) for r in ROLES}
    models = {}
    for role in ROLES:
        models[role], _ = load_model(session, paths[role], f"mrd pretrain --dataset {name}")
    doc = load_partition(session, paths)
    train, val = session.tensors("train"), session.tensors("val")
    codes = partition_codes(doc, train)
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
    selected = distill_pair(
        models["multi"],
        models["text"],
        train,
        codes,
        val,
        cfg.distill,
        curriculum,
        session.corpus.label_names,
        cfg.seed,
        state_path=state_path,
        resume=resume,
        signature=sig,
        on_epoch=on_epoch,
    )
    for role in ROLES:
        target = (out_dir / f"{role}.pt") if out_dir else session.run.distilled(role)
        save_checkpoint(
            target,
            models[role],
            selected[role].state_dict,
            **checkpoint_meta(
                session,
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
    return selected


# --------------------------------------------------------------------------------------
# reuse of earlier outputs (mrd run, mrd ablate)


def pretrained_is_current(session: Session) -> bool:
    """Both pretrained checkpoints exist and were made from this data, config and seed."""
    return all(_current_pretrained(session, role) is not None for role in ROLES)


def _current_pretrained(session: Session, role: str) -> dict[str, Any] | None:
    """``RUN/pretrain/<role>.pt`` if it exists and was made from this data, config and seed."""
    path = session.run.pretrained(role)
    if not path.is_file():
        return None
    try:
        ckpt = load_checkpoint(path)
    except MRDError:
        return None
    cfg = session.cfg.to_dict()
    made = ckpt.get("config")
    if (
        not isinstance(made, dict)
        or ckpt["data_fingerprint"] != session.corpus.fingerprint()
        or made.get("seed") != cfg["seed"]
        or any(made.get(k) != cfg[k] for k in ("dataset", "model", "pretrain"))
    ):
        return None
    return ckpt


def partition_is_current(session: Session) -> bool:
    """The partition exists, matches the pretrained checkpoints, data and partition config."""
    try:
        doc = load_partition(session, {r: session.run.pretrained(r) for r in ROLES})
    except (MRDError, KeyError, TypeError):
        return False
    p = session.cfg.partition
    return doc["method"] == p.method and (p.method != "cross_fit" or doc["folds"] == p.folds)

"""Recipe: compare the backbones of M_multi (or, with ``role="text"``, of M_text) on the same
data over seeds.

Each (backbone, seed) cell pretrains the role's model with that backbone (the loop of
``recipes.pretrain``: same data, loss, schedule and validation-chosen epoch for every
backbone), scores it on the test split and is saved on its own (``RUN/compare/cells/``), so
an interrupted comparison continues where it stopped. The summary gives each backbone's
test W-F1 as mean ± std over seeds, its difference from the reference backbone (the default,
``dialogue``, when compared; else the first named) with a paired t-test over seeds and a
paired bootstrap over test utterances, the majority-class W-F1, and each loss term's mean
over seeds at the first and the last epoch. A backbone the data cannot feed (Foal-Net or
DUAL on a text-only corpus) is reported as not run, with the reason.
"""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrd_cli.config import Config
from mrd_cli.core.device import resolve_device, set_threads
from mrd_cli.core.events import Event, OnEvent, emit
from mrd_cli.core.executor import Executor, LocalExecutor
from mrd_cli.core.metrics import classification_report
from mrd_cli.core.protocol_gap import gap_entry, gap_stats
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import Session, role_backbone, role_modalities, signature
from mrd_cli.core.stats import mean_std, paired_bootstrap_wf1, paired_t_test
from mrd_cli.core.training import EpochLog, predict
from mrd_cli.data.corpus import Corpus
from mrd_cli.errors import MRDError
from mrd_cli.io import MAX_JSON_BYTES, atomic_write_bytes, atomic_write_json, read_limited
from mrd_cli.models.registry import DEFAULT_BACKBONE, backbone_modalities, check_backbone
from mrd_cli.recipes.pretrain import pretrain


@dataclass
class ComparisonResult:
    """The comparison summary (``rows``: one per backbone that ran); ``not_run`` gives the
    reason for each backbone the data cannot feed; ``computed`` lists the (backbone, seed)
    cells this call trained (the others were reused)."""

    dataset: str
    role: str
    split: str
    labels: list[str]
    seeds: list[int]
    reference: str
    majority_weighted_f1: float
    bootstrap_resamples: int
    rows: list[dict[str, Any]]
    not_run: dict[str, str]
    computed: list[tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "role": self.role,
            "split": self.split,
            "labels": self.labels,
            "seeds": self.seeds,
            "reference": self.reference,
            "majority_weighted_f1": self.majority_weighted_f1,
            "bootstrap_resamples": self.bootstrap_resamples,
            "rows": self.rows,
            "not_run": self.not_run,
        }


def compare(
    session: Session,
    backbones: list[str],
    seeds: int,
    on_event: OnEvent | None = None,
    executor: Executor | None = None,
    role: str = "multi",
) -> ComparisonResult:
    """Pretrain the model of ``role`` (M_multi, or M_text on the text alone: ``model.backbone``
    or ``model.text_backbone`` set to each name) with each of ``backbones`` for ``seeds``
    seeds (from ``cfg.seed``),
    score each on the test split and summarise; writes ``RUN/compare/results.json``.
    ``executor`` (default: this process) runs the cells; ``on_event`` gets a ``cell`` event
    (name: the backbone, seed, reused) as each is found finished or finishes, and the
    epochs of the cells trained in this process."""
    executor = executor or LocalExecutor()
    if not backbones:
        raise MRDError("Name at least one backbone to compare.")
    for name in backbones:
        check_backbone(name)
        if role == "text" and name not in TEXT_BACKBONES:
            raise MRDError(
                f"M_text's backbone must be one of {', '.join(TEXT_BACKBONES)}, got '{name}'."
            )
    if len(set(backbones)) != len(backbones):
        raise MRDError(f"Each backbone may be named once, got {', '.join(backbones)}.")
    root = session.run.root / "compare"
    seed_list = [session.cfg.seed + i for i in range(seeds)]
    available = role_modalities(session.cfg, role)
    runnable, not_run = [], {}
    for name in backbones:
        cfg = _with_backbone(session, name, session.cfg.seed, role)
        try:
            backbone_modalities(name, role_backbone(cfg, role)[1], available)
        except MRDError as exc:
            not_run[name] = str(exc)
            continue
        runnable.append(name)
    if not runnable:
        raise MRDError(
            "None of the backbones can run on this data: "
            + " ".join(f"{k}: {v}" for k, v in not_run.items())
        )
    reference = DEFAULT_BACKBONE if DEFAULT_BACKBONE in runnable else runnable[0]
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    computed: list[tuple[str, int]] = []
    todo: list[CompareUnit] = []
    signatures: dict[tuple[str, int], str] = {}
    for name in runnable:
        for seed in seed_list:
            cfg = _with_backbone(session, name, seed, role)
            sig = signatures[(name, seed)] = signature(
                "compare",
                role,
                cfg.to_dict()["dataset"],
                cfg.to_dict()["model"],
                cfg.to_dict()["pretrain"],
                seed,
                session.corpus.fingerprint(),
            )
            cached = _read_cell(root / "cells" / f"{cell_name(role, name, seed)}.json", sig)
            lacks_gap = cached is not None and "test_selected" not in cached["result"]
            if session.protocol_gap and lacks_gap:
                cached = None  # the diagnostic was asked for and this cell lacks it
            if cached is None:
                device = executor.device(str(session.device))
                todo.append(CompareUnit(cfg, name, seed, device, role, session.protocol_gap))
                continue
            cells[(name, seed)] = cached["result"]
            emit(on_event, "cell", payload={"name": name, "seed": seed, "reused": True})
    # The cells left to train, each a unit of the executor; this process alone writes what
    # they return (the cell, its checkpoint and config), as each finishes.
    fn = (
        functools.partial(train_cell, on_event=on_event, tensors=session.tensor_cache)
        if executor.in_process
        else train_cell
    )
    for index, out in executor.map(fn, todo, session.corpus):
        unit = todo[index]
        for rel, data in out["files"].items():
            atomic_write_bytes(root / cell_name(role, unit.backbone, unit.seed) / rel, data)
        cell = {
            "signature": signatures[(unit.backbone, unit.seed)],
            "backbone": unit.backbone,
            "role": role,
            "seed": unit.seed,
            "result": out["result"],
        }
        atomic_write_json(
            root / "cells" / f"{cell_name(role, unit.backbone, unit.seed)}.json", cell
        )
        cells[(unit.backbone, unit.seed)] = out["result"]
        computed.append((unit.backbone, unit.seed))
        emit(on_event, "cell", payload={"name": unit.backbone, "seed": unit.seed, "reused": False})
    order = [(name, seed) for name in runnable for seed in seed_list]
    computed.sort(key=order.index)  # the study's order, whichever finished first
    summary = summarise(session, runnable, seed_list, cells, reference, not_run, role)
    atomic_write_json(root / "results.json", summary)
    return ComparisonResult(**summary, computed=computed)


# The backbones M_text can use (``model.text_backbone``).
TEXT_BACKBONES = ("dialogue", "m3net")


def _with_backbone(session: Session, name: str, seed: int, role: str = "multi"):
    cfg = copy.deepcopy(session.cfg)
    if role == "multi":
        cfg.model.backbone = name
    else:
        cfg.model.text_backbone = name
    cfg.seed = seed
    return cfg


def cell_name(role: str, backbone: str, seed: int) -> str:
    """A cell's file and directory name (M_text's cells carry the prefix ``text_``)."""
    return f"{'' if role == 'multi' else 'text_'}{backbone}_seed{seed}"


@dataclass(frozen=True)
class CompareUnit:
    """One (backbone, seed) cell as a unit of work: its config (backbone and seed set) and
    the device it trains on."""

    cfg: Config
    backbone: str
    seed: int
    device: str
    role: str = "multi"
    protocol_gap: bool = False


def cell_files(role: str) -> tuple[str, ...]:
    """What a cell leaves in ``RUN/compare/<cell_name>/``."""
    return (f"pretrain/{role}.pt", "config.yaml")


def train_cell(
    unit: CompareUnit,
    corpus: Corpus,
    on_event: OnEvent | None = None,
    tensors: dict | None = None,
) -> dict[str, Any]:
    """``run_cell`` in a temporary directory, wherever the executor puts it: the cell's
    result and its files (``CELL_FILES``) as bytes; writes nothing in the run directory.
    ``tensors``: device tensors to share (the same corpus in this process)."""
    set_threads(unit.cfg.threads)
    with tempfile.TemporaryDirectory(prefix="mrd-compare-") as tmp:
        sub = Session(
            unit.cfg, corpus, RunDir(Path(tmp)), resolve_device(unit.device), unit.protocol_gap
        )
        if tensors is not None:
            sub.tensor_cache = tensors
        result = run_cell(sub, on_event, unit.role)
        return {
            "result": result,
            "files": {rel: (Path(tmp) / rel).read_bytes() for rel in cell_files(unit.role)},
        }


def run_cell(sub: Session, on_event: OnEvent | None = None, role: str = "multi") -> dict[str, Any]:
    """Pretrain the model of ``role`` in ``sub`` (its config names the backbone and seed); its test
    metrics and predictions, the epoch chosen on validation, and the loss terms of the first
    and the last epoch."""
    logs: list[EpochLog] = []

    def keep(event: Event) -> None:
        if event.kind == "epoch":
            logs.append(event.log)
        if on_event:
            on_event(event)

    result = pretrain(sub, roles=(role,), on_event=keep)
    model, ckpt = sub.load_model(result.checkpoints[role], "mrd compare")
    test = sub.tensors("test")
    y_true = test.labels[test.mask].cpu().numpy()
    pred = predict(model, test)[test.mask].cpu().numpy()
    report = classification_report(y_true, pred, sub.corpus.label_names)
    return {
        "weighted_f1": report["weighted_f1"],
        "per_class_f1": report["per_class_f1"],
        "epoch": ckpt["epoch"],
        "val_weighted_f1": ckpt["val_metrics"]["weighted_f1"],
        "losses_first_epoch": logs[0].losses if logs else None,
        "losses_last_epoch": logs[-1].losses if logs else None,
        "predictions": pred.tolist(),
        **gap_entry(result.checkpoints[role]),
    }


def _read_cell(path: Path, sig: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        cell = json.loads(read_limited(path, MAX_JSON_BYTES, "comparison cell"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return cell if cell.get("signature") == sig else None


def majority_weighted_f1(session: Session) -> float:
    """Test W-F1 of always predicting the training split's most frequent class."""
    train, test = session.tensors("train"), session.tensors("test")
    counts = np.bincount(
        train.labels[train.mask].cpu().numpy(), minlength=len(session.corpus.label_names)
    )
    y_true = test.labels[test.mask].cpu().numpy()
    pred = np.full_like(y_true, int(counts.argmax()))
    return classification_report(y_true, pred, session.corpus.label_names)["weighted_f1"]


def summarise(
    session: Session,
    backbones: list[str],
    seeds: list[int],
    cells: dict[tuple[str, int], dict[str, Any]],
    reference: str,
    not_run: dict[str, str],
    role: str = "multi",
) -> dict[str, Any]:
    labels = session.corpus.label_names
    test = session.tensors("test")
    y_true = test.labels[test.mask].cpu().numpy()
    resamples = session.cfg.ablate.bootstrap
    ref = [cells[(reference, s)] for s in seeds]
    rows = []
    for name in backbones:
        per_seed = [cells[(name, s)] for s in seeds]
        wf1 = [c["weighted_f1"] for c in per_seed]
        m, sd = mean_std(wf1)
        row: dict[str, Any] = {
            "backbone": name,
            "weighted_f1": {"mean": m, "std": sd, "values": wf1},
            "per_class_f1": {
                lab: dict(
                    zip(("mean", "std"), mean_std([c["per_class_f1"][lab] for c in per_seed]))
                )
                for lab in labels
            },
            "epochs": [c["epoch"] for c in per_seed],
            **gap_stats(per_seed),
            "losses_first_epoch": _mean_losses([c["losses_first_epoch"] for c in per_seed]),
            "losses_last_epoch": _mean_losses([c["losses_last_epoch"] for c in per_seed]),
        }
        if name != reference:
            delta, p_t = paired_t_test(wf1, [c["weighted_f1"] for c in ref])
            lo, hi, p_boot = (
                paired_bootstrap_wf1(
                    y_true,
                    [np.asarray(c["predictions"]) for c in per_seed],
                    [np.asarray(c["predictions"]) for c in ref],
                    len(labels),
                    resamples,
                    seed=session.cfg.seed,
                )
                if resamples > 0
                else (None, None, None)
            )
            row.update(
                {
                    "delta_wf1": delta,
                    "p_paired_t": p_t,
                    "bootstrap_ci95": [lo, hi],
                    "p_bootstrap": p_boot,
                }
            )
        rows.append(row)
    return {
        "dataset": session.corpus.name,
        "role": role,
        "split": "test",
        "labels": labels,
        "seeds": seeds,
        "reference": reference,
        "majority_weighted_f1": majority_weighted_f1(session),
        "bootstrap_resamples": resamples,
        "rows": rows,
        "not_run": not_run,
    }


def _mean_losses(per_seed: list[dict[str, float] | None]) -> dict[str, float]:
    """Each loss term's mean over seeds."""
    present = [p for p in per_seed if p]
    if not present:
        return {}
    return {k: float(np.mean([p[k] for p in present])) for k in present[0]}

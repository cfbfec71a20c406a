"""Recipe: the ablation study (paper Table 5): MRD and MRD without MIC / ILC / RCL over seeds.

Each (variant, seed) cell is distilled, evaluated on the test split and saved on its own
(``RUN/ablation/cells/``), so an interrupted study continues where it stopped. The summary
gives mean ± std over seeds, each variant's W-F1 difference from MRD, a paired t-test over
seeds and a paired bootstrap interval over test utterances.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrd_cli.config import Config
from mrd_cli.core.device import resolve_device, set_threads
from mrd_cli.core.events import OnEvent, emit
from mrd_cli.core.executor import Executor, LocalExecutor
from mrd_cli.core.metrics import classification_report
from mrd_cli.core.protocol_gap import gap_entry, gap_stats, has_gap
from mrd_cli.core.rundir import ROLES, RunDir, role_labels, unpack
from mrd_cli.core.session import Session, role_modalities, signature
from mrd_cli.core.stats import mean_std, paired_bootstrap_wf1, paired_t_test
from mrd_cli.core.timing import StepTimer, maybe
from mrd_cli.core.training import predict
from mrd_cli.data.corpus import Corpus
from mrd_cli.errors import MRDError
from mrd_cli.io import (
    MAX_JSON_BYTES,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    read_limited,
)
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.partition import ensure_partitioned

COMPONENTS = ("mic", "ilc", "rcl")


@dataclass
class AblationResult:
    """The ablation summary (``rows``: one per model, mean ± std over ``seeds``; MRD's
    difference from the pretrained model of the same role, each variant's from MRD);
    ``computed`` lists the (variant, seed) cells this call trained (the others were reused
    from ``RUN/ablation/cells/``)."""

    dataset: str
    split: str
    labels: list[str]
    seeds: list[int]
    repretrain: bool
    keep_start: bool
    refactoring_target: str
    bootstrap_resamples: int
    rows: list[dict[str, Any]]
    computed: list[tuple[str, int]] = field(default_factory=list)
    # Wall seconds per step of this call (``core.timing.STEPS`` and ``total``), when timed.
    timings: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "labels": self.labels,
            "seeds": self.seeds,
            "repretrain": self.repretrain,
            "keep_start": self.keep_start,
            "refactoring_target": self.refactoring_target,
            "bootstrap_resamples": self.bootstrap_resamples,
            "rows": self.rows,
            **({"timings": self.timings} if self.timings is not None else {}),
        }


# What switching a component off sets (dotted config keys; `mrd distill --without` too).
COMPONENT_OFF: dict[str, dict[str, Any]] = {
    "mic": {"distill.alpha": 0.0, "distill.beta": 0.0},
    "ilc": {"distill.gamma": 0.0, "distill.delta": 0.0},
    "rcl": {"distill.curriculum": "none"},
}


def without_values(without: Iterable[str]) -> dict[str, Any]:
    """The dotted config values that switch the components ``without`` off (``COMPONENT_OFF``)."""
    values: dict[str, Any] = {}
    for comp in without:
        off = COMPONENT_OFF.get(comp.lower())
        if off is None:
            raise MRDError(f"Unknown component '{comp}' for --without; use mic, ilc or rcl.")
        values.update(off)
    return values


def apply_without(cfg: Config, without: Iterable[str]) -> Config:
    """A copy of ``cfg`` with components switched off: mic -> alpha = beta = 0;
    ilc -> gamma = delta = 0; rcl -> curriculum none (``COMPONENT_OFF``)."""
    cfg = copy.deepcopy(cfg)
    for dotted, value in without_values(without).items():
        section, key = dotted.split(".")
        setattr(getattr(cfg, section), key, value)
    return cfg


def variant_name(without: tuple[str, ...]) -> str:
    return "MRD" if not without else "MRD w/o " + " & ".join(c.upper() for c in without)


@dataclass(frozen=True)
class CellUnit:
    """One (variant, seed) cell as a unit of work: its config (the variant and seed
    applied), the pretrained pair and partition it distils (``base``, a key of the files
    handed to ``train_cell``) and the device it trains on."""

    cfg: Config
    without: tuple[str, ...]
    seed: int
    base: str
    device: str
    protocol_gap: bool = False


def train_cell(
    unit: CellUnit,
    corpus: Corpus,
    bases: dict[str, dict[str, bytes]],
    on_event: OnEvent | None = None,
    tensors: dict | None = None,
) -> dict[str, Any]:
    """Distil one variant with one seed and score both models on the test split, in a
    temporary directory holding the files of ``bases[unit.base]`` (``DISTILL_INPUTS``): the
    cell's test metrics and predictions (``result``), its checkpoints as bytes and the
    seconds each step took. Runs wherever the executor puts it and writes nothing in the run
    directory. ``tensors``: device tensors to share (the same corpus in this process)."""
    set_threads(unit.cfg.threads)
    with tempfile.TemporaryDirectory(prefix="mrd-cell-") as tmp:
        base = unpack(Path(tmp) / "base", bases[unit.base])
        session = Session(unit.cfg, corpus, base, resolve_device(unit.device), unit.protocol_gap)
        if tensors is not None:
            session.tensor_cache = tensors
        out_dir = Path(tmp) / "cell"
        start = time.perf_counter()
        distill(session, on_event=on_event, out_dir=out_dir)
        trained = time.perf_counter()
        result = _cell_metrics(session, out_dir)
        return {
            "result": result,
            "checkpoints": {role: (out_dir / f"{role}.pt").read_bytes() for role in ROLES},
            "seconds": {"distill": trained - start, "evaluate": time.perf_counter() - trained},
        }


def _cell_metrics(session: Session, cell_dir) -> dict[str, Any]:
    """Test metrics and predictions of the distilled pair in ``cell_dir``."""
    test = session.tensors("test")
    y_true = test.labels[test.mask].cpu().numpy()
    out: dict[str, Any] = {}
    for role in ROLES:
        model, ckpt = session.load_model(cell_dir / f"{role}.pt", "mrd distill")
        pred = predict(model, test)[test.mask].cpu().numpy()
        report = classification_report(y_true, pred, session.corpus.label_names)
        out[role] = {
            "weighted_f1": report["weighted_f1"],
            "per_class_f1": report["per_class_f1"],
            "epoch": ckpt["epoch"],
            "stopping": ckpt.get("stopping"),
            "predictions": pred.tolist(),
            **gap_entry(cell_dir / f"{role}.pt"),
        }
    return out


def _cell_path(session: Session, without: tuple[str, ...], seed: int) -> Path:
    return session.run.ablation / "cells" / f"{_slug(without)}_seed{seed}.json"


def _slug(without: tuple[str, ...]) -> str:
    return "mrd" if not without else "without_" + "_".join(without)


def ablate(
    session: Session,
    variants: list[tuple[str, ...]],
    seeds: int,
    on_event: OnEvent | None = None,
    timer: StepTimer | None = None,
    executor: Executor | None = None,
) -> AblationResult:
    """Run (or reuse) every (variant, seed) cell and summarise. ``variants`` excludes MRD
    itself, which is always run. ``timer`` gets each step's wall time. ``executor``
    (default: this process) runs the cells; ``on_event`` gets a ``cell`` event (name: the
    variant, seed, reused) as each is found finished or finishes, and the events of the
    steps and of the cells trained in this process."""
    cfg = session.cfg
    all_variants = [()] + [v for v in variants if v]
    seed_list = [cfg.seed + i for i in range(seeds)]
    labels = session.corpus.label_names
    executor = executor or LocalExecutor()
    cells: dict[tuple[tuple[str, ...], int], dict[str, Any]] = {}
    computed: list[tuple[str, int]] = []
    base_metrics: dict[int, dict[str, Any]] = {}
    bases: dict[str, dict[str, bytes]] = {}
    todo: list[CellUnit] = []
    signatures: dict[int, str] = {}
    for seed in seed_list:
        if cfg.ablate.repretrain:
            base = RunDir(session.run.ablation / f"base_seed{seed}")
            base_cfg = copy.deepcopy(cfg)
            base_cfg.seed = seed
            base_session = session.derive(base_cfg, base)
        else:
            base, base_session = session.run, session
        # Each seed's own pretrained pair (repretrain) is the ablation's cache: it may be
        # replaced; the run's pair is not replaced without `mrd run --force`.
        ensure_partitioned(
            base_session,
            on_event=on_event,
            replace_pretrained=cfg.ablate.repretrain,
            timer=timer,
            executor=executor,
        )
        # A reused pretrained pair gives the same test metrics for every seed.
        if cfg.ablate.repretrain or not base_metrics:
            with maybe(timer, "evaluate"):
                base_metrics[seed] = _pretrained_test(base_session)
        else:
            base_metrics[seed] = next(iter(base_metrics.values()))
        signatures[seed] = signature(
            cfg.to_dict()["dataset"],
            cfg.to_dict()["model"],
            cfg.to_dict()["pretrain"],
            cfg.to_dict()["partition"],
            cfg.to_dict()["distill"],
            cfg.ablate.repretrain,
            session.corpus.fingerprint(),
            [file_sha256(base.pretrained(r)) for r in ROLES],
        )
        for without in all_variants:
            cached = _read_cell(_cell_path(session, without, seed), signatures[seed], labels)
            if cached is not None and session.protocol_gap and not has_gap(cached["result"]):
                cached = None  # the diagnostic was asked for and this cell lacks it
            if cached is not None:
                cells[(without, seed)] = cached["result"]
                emit(
                    on_event,
                    "cell",
                    payload={"name": variant_name(without), "seed": seed, "reused": True},
                )
                continue
            key = str(base.root.relative_to(session.run.root))
            if key not in bases:
                bases[key] = base.distill_inputs()
            cell_cfg = apply_without(cfg, without)
            cell_cfg.seed = seed
            device = executor.device(str(session.device))
            todo.append(CellUnit(cell_cfg, without, seed, key, device, session.protocol_gap))

    # The cells left to train, each a unit of the executor (in this process, or Ray tasks
    # running side by side); this process alone writes what they return, as each finishes.
    if executor.in_process:
        shared = session.tensor_cache
        fn = functools.partial(train_cell, on_event=on_event, tensors=shared)
    else:
        fn = train_cell
    with maybe(None if executor.in_process else timer, "distill"):
        for index, out in executor.map(fn, todo, session.corpus, bases):
            unit = todo[index]
            name = variant_name(unit.without)
            cell_dir = session.run.ablation / "models" / f"{_slug(unit.without)}_seed{unit.seed}"
            for role, data in out["checkpoints"].items():
                atomic_write_bytes(cell_dir / f"{role}.pt", data)
            cell = {
                "signature": signatures[unit.seed],
                "variant": name,
                "seed": unit.seed,
                "result": out["result"],
            }
            atomic_write_json(_cell_path(session, unit.without, unit.seed), cell)
            if timer is not None and executor.in_process:
                for step, seconds in out["seconds"].items():
                    timer.add(step, seconds)
            cells[(unit.without, unit.seed)] = out["result"]
            computed.append((name, unit.seed))
            emit(on_event, "cell", payload={"name": name, "seed": unit.seed, "reused": False})
    # Listed in the study's order, whichever finished first.
    order = [(variant_name(w), s) for s in seed_list for w in all_variants]
    computed.sort(key=order.index)
    with maybe(timer, "evaluate"):
        summary = summarise(session, all_variants, seed_list, cells, base_metrics)
    atomic_write_json(session.run.ablation / "results.json", summary)
    atomic_write_text(session.run.ablation / "results.csv", to_csv(summary))
    return AblationResult(**summary, computed=computed, timings=timer.to_dict() if timer else None)


def _read_cell(path, sig: str, labels: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        cell = json.loads(read_limited(path, MAX_JSON_BYTES, "ablation cell"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    # A cell file is a cache: one that is damaged (or edited) is recomputed, not trusted.
    if not isinstance(cell, dict) or cell.get("signature") != sig:
        return None
    result = cell.get("result")
    if not isinstance(result, dict) or not all(_role_ok(result.get(r), labels) for r in ROLES):
        return None
    return cell


def _role_ok(entry: Any, labels: list[str]) -> bool:
    """One model's cached cell metrics have the fields ``summarise`` reads, well typed."""
    number = (int, float)
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("weighted_f1"), number)
        and isinstance(entry.get("per_class_f1"), dict)
        and set(labels) <= set(entry["per_class_f1"])
        and all(isinstance(v, number) for v in entry["per_class_f1"].values())
        and isinstance(entry.get("predictions"), list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in entry["predictions"])
    )


def _pretrained_test(session: Session) -> dict[str, Any]:
    test = session.tensors("test")
    y_true = test.labels[test.mask].cpu().numpy()
    out = {}
    for role in ROLES:
        model, _ = session.load_model(session.run.pretrained(role), "mrd pretrain")
        pred = predict(model, test)[test.mask].cpu().numpy()
        report = classification_report(y_true, pred, session.corpus.label_names)
        out[role] = {
            "weighted_f1": report["weighted_f1"],
            "per_class_f1": report["per_class_f1"],
            "predictions": pred.tolist(),
            **gap_entry(session.run.pretrained(role)),
        }
    return out


def summarise(
    session: Session,
    variants: list[tuple[str, ...]],
    seeds: list[int],
    cells: dict,
    base_metrics: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    labels = session.corpus.label_names
    test = session.tensors("test")
    y_true = test.labels[test.mask].cpu().numpy()

    def stats_of(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
        wf1 = [c["weighted_f1"] for c in per_seed]
        m, s = mean_std(wf1)
        per_class = {}
        for lab in labels:
            cm, cs = mean_std([c["per_class_f1"][lab] for c in per_seed])
            per_class[lab] = {"mean": cm, "std": cs}
        return {
            "weighted_f1": {"mean": m, "std": s, "values": wf1},
            "per_class_f1": per_class,
            **gap_stats(per_seed),
        }

    def compare(row: dict[str, Any], per_seed: list, reference: list, against: str) -> None:
        """Paired difference of ``per_seed`` from ``reference`` (same seeds, same role)."""
        delta, p_t = paired_t_test(
            [c["weighted_f1"] for c in per_seed], [c["weighted_f1"] for c in reference]
        )
        lo, hi, p_boot = (
            paired_bootstrap_wf1(
                y_true,
                [np.asarray(c["predictions"]) for c in per_seed],
                [np.asarray(c["predictions"]) for c in reference],
                len(labels),
                session.cfg.ablate.bootstrap,
                seed=session.cfg.seed,
            )
            if session.cfg.ablate.bootstrap > 0
            else (None, None, None)
        )
        row.update(
            {
                "vs": against,
                "delta_wf1": delta,
                "p_paired_t": p_t,
                "bootstrap_ci95": [lo, hi],
                "p_bootstrap": p_boot,
            }
        )

    rows = []
    pretrained = {role: [base_metrics[s][role] for s in seeds] for role in ROLES}
    # Row names; on a text-only corpus M_multi's rows say it is a second text model.
    modalities = role_modalities(session.cfg, "multi")
    names = role_labels({"multi": "multimodal", "text": "text model"}, modalities)
    for role in ROLES:
        label = f"Pretrained ({names[role]})"
        rows.append(
            {"name": label, "variant": "pretrained", "role": role, **stats_of(pretrained[role])}
        )
    mrd = {role: [cells[((), s)][role] for s in seeds] for role in ROLES}
    for without in variants:
        for role in ROLES:
            per_seed = [cells[(without, s)][role] for s in seeds]
            name = variant_name(without) + (
                f" ({names[role]})" if role == "text" or names["multi"] != "multimodal" else ""
            )
            row = {
                "name": name,
                "variant": variant_name(without),
                "role": role,
                **stats_of(per_seed),
                # Seeds whose distillation kept the pretrained weights (epoch 0).
                "kept_pretrained": sum(1 for c in per_seed if c["epoch"] == 0),
            }
            if without:
                compare(row, per_seed, mrd[role], "MRD")
            else:
                compare(row, per_seed, pretrained[role], "pretrained")
            rows.append(row)
    return {
        "dataset": session.corpus.name,
        "split": "test",
        "labels": labels,
        "seeds": seeds,
        "repretrain": session.cfg.ablate.repretrain,
        # How distillation chose its epoch: with keep_start the pretrained weights were a
        # candidate (epoch 0), so a distilled model can equal its pretrained one.
        "keep_start": session.cfg.distill.keep_start,
        "refactoring_target": session.cfg.distill.refactoring_target,
        "bootstrap_resamples": session.cfg.ablate.bootstrap,
        "rows": rows,
    }


def to_csv(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    labels = summary["labels"]
    writer = csv.writer(buf)
    writer.writerow(
        ["name", "role"]
        + [f"f1_{lab}_{s}" for lab in labels for s in ("mean", "std")]
        + ["wf1_mean", "wf1_std", "delta_wf1", "p_paired_t", "ci95_lo", "ci95_hi", "p_bootstrap"]
    )
    for row in summary["rows"]:
        ci = row.get("bootstrap_ci95") or [None, None]
        writer.writerow(
            [row["name"], row["role"]]
            + [f"{row['per_class_f1'][lab][s]:.4f}" for lab in labels for s in ("mean", "std")]
            + [f"{row['weighted_f1']['mean']:.4f}", f"{row['weighted_f1']['std']:.4f}"]
            + [
                _fmt(row.get("delta_wf1")),
                _fmt(row.get("p_paired_t")),
                _fmt(ci[0]),
                _fmt(ci[1]),
                _fmt(row.get("p_bootstrap")),
            ]
        )
    return buf.getvalue()


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"

"""Recipe: figures of a run directory (`mrd plot`), as PNG and SVG under ``RUN/plots/``.

Reads what the other steps saved, trains nothing:

| figure | from |
|---|---|
| ``confusion_<stage>_<role>``: counts and row % | ``RUN/metrics/<split>.json`` (``mrd evaluate``) |
| ``training_curves``: validation W-F1 per epoch, curriculum stages shaded | the checkpoints' per-epoch history |
| ``partition_groups``: group sizes per class | ``RUN/partition.json`` |
| ``ablation``: W-F1 mean ± std, seeds, significance | ``RUN/ablation/results.json`` (``mrd ablate``) |
| ``tuning_<study>``: the study's history | ``RUN/tune/<study>/results.json`` (``mrd tune``) |

A figure whose results are missing is skipped, with the command that makes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mrd_cli.core import figures
from mrd_cli.core.checkpoint_meta import read_checkpoint_metadata
from mrd_cli.core.results_files import MAX_DRAWN_CLASSES, read_results
from mrd_cli.core.rundir import ROLES, RunDir, role_labels, run_modalities
from mrd_cli.core.stats import SIGNIFICANCE_LEGEND, significance_marks
from mrd_cli.errors import MRDError

STAGE_TITLES = {"pretrain": "pretraining", "distill": "distillation (MRD)"}


@dataclass
class PlotResult:
    """The figures written (``figures``: name -> its files) and the ones left out, with
    the reason (``skipped``: name -> why)."""

    run_dir: str
    split: str
    figures: dict[str, list[str]]
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "split": self.split,
            "figures": self.figures,
            "skipped": self.skipped,
        }


def plot(
    run_dir: Path, split: str = "test", formats: tuple[str, ...] = figures.FORMATS
) -> PlotResult:
    """Draw every figure the run directory has the results for into ``RUN/plots/``.

    A run directory with none of them is an error, and so is a missing matplotlib (the
    ``plots`` extra).
    """
    figures.require_matplotlib()
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise MRDError(
            f"Run directory {run.root} does not exist. Pass the directory a run wrote (its "
            "--run-dir)."
        )
    out = run.plots
    written: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for name, draw in _figures(run, split):
        if isinstance(draw, str):
            skipped[name] = draw
            continue
        try:
            fig = draw()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            skipped[name] = f"its results file is malformed ({type(exc).__name__}: {exc})"
            continue
        if isinstance(fig, str):
            skipped[name] = fig
            continue
        paths = figures.save_figure(fig, out / name, formats)
        written[name] = [str(p) for p in paths]
    if not written:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items())
        raise MRDError(f"Nothing to plot in {run.root} ({reasons}).")
    return PlotResult(run_dir=str(run.root), split=split, figures=written, skipped=skipped)


def _figures(run: RunDir, split: str) -> Iterator[tuple[str, Callable[[], Any] | str]]:
    """(name, a function drawing the figure, or why there is none) for each figure; a
    drawing function may still return a reason instead of a figure."""
    metrics = read_results(run.metrics / f"{split}.json", "metrics")
    if metrics is None:
        yield "confusion", f"no metrics/{split}.json; run `mrd evaluate --split {split}`"
    else:
        for model, entry in metrics["models"].items():
            name = "confusion_" + model.replace("/", "_")
            yield name, partial(_confusion, metrics, model, entry)
    yield "training_curves", partial(training_curves, run)
    partition = read_results(run.partition, "partition")
    if partition is None:
        yield "partition_groups", "no partition.json; run `mrd partition`"
    else:
        yield "partition_groups", partial(_partition, partition)
    ablation = read_results(run.ablation / "results.json", "ablation")
    if ablation is None:
        yield "ablation", "no ablation/results.json; run `mrd ablate`"
    else:
        yield "ablation", partial(_ablation, ablation, _role_labels(run))
    studies = sorted((run.root / "tune").glob("*/results.json"))
    if not studies:
        yield "tuning", "no tune/<study>/results.json; run `mrd tune`"
    for path in studies:
        yield f"tuning_{path.parent.name}", partial(_tuning, read_results(path, "study"))


def _confusion(metrics: dict[str, Any], model: str, entry: dict[str, Any]) -> Any:
    if "confusion_matrix" not in entry:
        return "the metrics hold no confusion matrix for it"
    if len(metrics["labels"]) > MAX_DRAWN_CLASSES:
        return (
            f"{len(metrics['labels'])} classes are too many to draw legibly (at most "
            f"{MAX_DRAWN_CLASSES}); the counts are in the metrics file"
        )
    title = f"Confusion matrix of {model} on the {metrics['split']} split of {metrics['dataset']}"
    return figures.confusion_figure(entry["confusion_matrix"], metrics["labels"], title)


def _partition(doc: dict[str, Any]) -> Any:
    labels = list(next(iter(doc["counts"].values())))
    method = (
        f"cross-fitted, {doc.get('folds')} folds"
        if doc.get("method") == "cross_fit"
        else "in-sample"
    )
    title = f"Partition of the training utterances ({method})"
    return figures.partition_figure(doc["counts"], labels, title)


def _role_labels(run: RunDir) -> dict[str, str]:
    """The legend's names of the two models (M_multi's by what it sees: ``role_labels``)."""
    return role_labels(figures.ROLE_LABEL, run_modalities(run.root))


def _ablation(summary: dict[str, Any], labels: dict[str, str] | None = None) -> Any:
    rows = [
        {**row, "marks": significance_marks(row.get("p_paired_t"), row.get("bootstrap_ci95"))}
        for row in summary["rows"]
    ]
    n = len(summary["seeds"])
    title = f"Ablation on {summary['dataset']}: mean ± std over {n} seeds, dots: seeds"
    note = (
        "Marks: each variant against MRD, MRD against the pretrained model (same model, "
        f"same seeds). {SIGNIFICANCE_LEGEND}."
    )
    return figures.ablation_figure(rows, title, note, labels)


def _tuning(study: dict[str, Any]) -> Any:
    finished = [t for t in study["trials"] if t["state"] in ("complete", "pruned")]
    if not finished:
        return "the study has no finished trial yet"
    title = f"Tuning study '{study['study']}' on {study['dataset']}"
    return figures.tuning_figure(
        study["trials"], study.get("pretrained_value"), title, study["target"]
    )


def training_curves(run: RunDir) -> Any:
    """The figure of validation W-F1 per epoch from the run's checkpoints, or why not."""
    panels = []
    old = []
    for stage, path_of in (("pretrain", run.pretrained), ("distill", run.distilled)):
        curves, selected, rejected, stages = {}, {}, {}, None
        for role in ROLES:
            if not path_of(role).is_file():
                continue
            ckpt = read_checkpoint_metadata(path_of(role))
            history = ckpt.get("history")
            if not history:
                old.append(f"{stage}/{role}")
                continue
            curves[role] = [(h["epoch"], h["val_weighted_f1"]) for h in history]
            selected[role] = ckpt.get("epoch")
            guard = ckpt.get("start_guard") or {}
            if guard.get("kept_start"):  # the start guard kept the pretrained weights
                rejected[role] = guard["best_epoch"]
            stages = stages or ckpt.get("curriculum_stages")
        if curves:
            panels.append(
                {
                    "title": STAGE_TITLES[stage],
                    "curves": curves,
                    "selected": selected,
                    "rejected": rejected,
                    "stages": [tuple(s) for s in stages] if stages else None,
                }
            )
    if not panels:
        if old:
            return (
                f"the checkpoints ({', '.join(old)}) were made before mrd kept the per-epoch "
                "history; rerun `mrd run --force` to remake them"
            )
        return "no checkpoints; run `mrd run`"
    return figures.training_figure(
        panels, f"Validation W-F1 per epoch ({run.root.name})", _role_labels(run)
    )

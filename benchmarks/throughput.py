"""Throughput benchmark: how long MRD's steps take at full corpus size, and how much memory.

Writes full-size synthetic feature files in the community layout to a temporary directory,
reads them through the real readers with the dataset's default config, and times, with that
config, one of each: loading, a pretraining epoch of each model, a distillation epoch (both
models, frozen copies, every loss term, reverse curriculum), the same distillation epoch's
compute alone (training updates and validation forward passes on batches built beforehand:
the floor that data handling is compared with), and evaluation on the test split. Every
time is the median of ``--repeats`` repetitions after one warm-up. The steps are the
recipes' own (``recipes.pretrain.ClassifierStep``, ``recipes.distill.DistillStep``: their
batches, loss, backward and optimizer step), run by the recipes' own loop
(``core.training.train_epoch``); an epoch here is that loop over an epoch's batches followed
by validation, as in the recipes.

    python benchmarks/throughput.py                    # IEMOCAP size, default device
    python benchmarks/throughput.py --preset meld --json
    python benchmarks/throughput.py --threads 1 --repeats 5
    python benchmarks/throughput.py --backbone foal       # M_multi = Foal-Net, every figure
    python benchmarks/throughput.py --backbone dialogue,foal,dual   # M_multi's pretraining
                                    # epoch of each backbone, back to back, with the ratio
                                    # to the dialogue network's
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from mrd_cli.config import load_config
from mrd_cli.core.curriculum import Curriculum
from mrd_cli.core.device import resolve_device, seed_everything
from mrd_cli.core.partition import GROUP_CODE, group_counts, partition_by_agreement
from mrd_cli.core.session import build_model
from mrd_cli.core.training import (
    EVAL_BATCH,
    TrainingStep,
    batch_logits,
    evaluate,
    predict,
    train_epoch,
)
from mrd_cli.data.formats import load_corpus
from mrd_cli.data.synthetic import write_synthetic
from mrd_cli.data.tensors import SplitTensors, split_tensors
from mrd_cli.errors import MRDError
from mrd_cli.models.dialogue import Backbone
from mrd_cli.models.registry import BACKBONES
from mrd_cli.recipes.distill import DistillStep
from mrd_cli.recipes.pretrain import ClassifierStep


def train_steps(step: TrainingStep, batches, device: torch.device) -> torch.Tensor:
    """The recipes' own inner loop (``core.training.train_epoch``) over ``batches``; the
    epoch's mean loss terms, stacked (on ``device``)."""
    return torch.stack(list(train_epoch(step, batches, device).values()))


def run_epoch(step: TrainingStep, epoch: int, generator, val: SplitTensors, labels: list[str]):
    """One epoch as the recipes run it: the loop, one read of the losses, validation."""
    losses = train_steps(step, step.batches(epoch, generator), val.labels.device).cpu()
    return losses, {name: evaluate(m, val, labels) for name, m in step.models.items()}


class Preset(str, Enum):
    iemocap = "iemocap"
    meld = "meld"
    tiny = "tiny"


# preset -> (synthetic generator preset, built-in dataset config)
PRESETS = {
    "iemocap": ("iemocap", "iemocap"),
    "meld": ("meld", "meld"),
    "tiny": ("small", "iemocap"),  # 80 short dialogues, narrow features: for the tests
}

# The targets (IEMOCAP preset, default config, two CPU cores).
TARGETS = {
    "pretrain_multi_epoch_s": 4.0,
    "pretrain_text_epoch_s": 4.0,
    "distill_epoch_s": 7.0,
    "peak_rss_mb": 1500.0,
}
MAX_DATA_OVERHEAD = 1.10  # distill_epoch_s / distill_compute_only_s
# 1-minute load average (before the run) above which the machine counts as shared.
BUSY_LOAD = 0.5

# The target for another backbone: its M_multi pretraining epoch at most this many
# times the dialogue network's.
MAX_BACKBONE_RATIO = 3.0

KEYS = (
    "preset",
    "backbone",
    "load_s",
    "pretrain_multi_epoch_s",
    "pretrain_text_epoch_s",
    "distill_epoch_s",
    "distill_compute_only_s",
    "evaluate_s",
    "peak_rss_mb",
    "cuda_max_allocated_mb",
    "device",
    "torch_threads",
)

err_console = Console(stderr=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall time of ``fn()`` until the device has finished its work, and its result."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def _median_after_warmup(
    fn: Callable[[int], Any], repeats: int, device: torch.device
) -> tuple[float, Any]:
    """Median wall time of ``fn(i)`` over ``repeats`` calls after one warm-up call (i = 0),
    and the last call's result."""
    times, result = [], None
    for i in range(repeats + 1):
        result = None  # let the last result go first: two loaded corpora would inflate the peak
        seconds, result = _timed(lambda i=i: fn(i), device)
        times.append(seconds)
    return statistics.median(times[1:]), result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def in_sample_groups(
    multi: Backbone, text: Backbone, train: SplitTensors, label_names: list[str]
) -> tuple[torch.Tensor, dict[str, int]]:
    """Partition codes [D, L] and group sizes from the models' in-sample predictions (Eq. 9-13).

    The benchmark needs a partition of the right shape, not an honest one: the cross-fitted
    partition of ``mrd partition`` would cost ten more pretrainings.
    """
    y_true = train.labels[train.mask].cpu().numpy()
    codes = partition_by_agreement(
        y_true,
        predict(multi, train)[train.mask].cpu().numpy(),
        predict(text, train)[train.mask].cpu().numpy(),
    )
    groups = torch.full_like(train.labels, GROUP_CODE["general"])
    groups[train.mask] = torch.as_tensor(codes, device=train.mask.device)
    totals = {g: sum(c.values()) for g, c in group_counts(codes, y_true, label_names).items()}
    return groups, totals


def measure(
    preset: str,
    repeats: int,
    device: torch.device,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
    backbone: str = "dialogue",
) -> dict[str, Any]:
    """Run the benchmark with M_multi's network ``backbone`` and return its figures (the keys
    of ``KEYS``)."""
    synth_preset, config_name = PRESETS[preset]
    cfg, _ = load_config(config_name, overrides={"model": {"backbone": backbone}})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="mrd-bench-") as tmp:
        progress(f"Writing synthetic {synth_preset} feature files")
        write_synthetic(synth_preset, Path(tmp), seed)

        def load(_: int) -> tuple[Any, dict[str, SplitTensors]]:
            corpus = load_corpus(cfg.dataset, Path(tmp))
            return corpus, {s: split_tensors(corpus, s, device) for s in ("train", "val", "test")}

        progress("Loading")
        load_s, (corpus, splits) = _median_after_warmup(load, repeats, device)
    train, val, test = splits["train"], splits["val"], splits["test"]
    num_classes = corpus.num_classes
    labels = corpus.label_names

    seed_everything(seed)
    models, pretrain_s = {}, {}
    for role in ("multi", "text"):
        model = build_model(corpus, cfg, role, device)
        step = ClassifierStep(model, train, cfg.pretrain, num_classes)
        generator = torch.Generator().manual_seed(seed)
        progress(f"Pretraining epochs of M_{role}")
        pretrain_s[role], _ = _median_after_warmup(
            lambda epoch, step=step, generator=generator: run_epoch(
                step, epoch, generator, val, labels
            ),
            repeats,
            device,
        )
        models[role] = model

    groups, totals = in_sample_groups(models["multi"], models["text"], train, labels)
    d = cfg.distill
    curriculum = Curriculum.build(d.curriculum, d.epochs, d.stage_fractions, d.cumulative, totals)
    step = DistillStep(models["multi"], models["text"], train, groups, d, curriculum, num_classes)
    generator = torch.Generator().manual_seed(seed)
    # The last epoch is in the last curriculum stage, where every dialogue takes part: the
    # heaviest epoch of the schedule.
    epoch = d.epochs - 1
    epoch_s, compute_s = [], []
    for i in range(repeats + 1):  # the first of each is the warm-up
        progress(f"Distillation epochs ({i + 1}/{repeats + 1})")
        seconds, _ = _timed(lambda: run_epoch(step, epoch, generator, val, labels), device)
        epoch_s.append(seconds)
        # The same epoch's compute alone: training updates and validation forward passes on
        # batches built beforehand; no batch building, no metrics.
        train_batches = list(step.batches(epoch, generator))
        val_batches = {
            r: list(val.select(m.modalities).batches(EVAL_BATCH)) for r, m in models.items()
        }

        def compute(train_batches=train_batches, val_batches=val_batches) -> None:
            losses = train_steps(step, train_batches, device)
            for role, model in models.items():
                batch_logits(model, val_batches[role], val.labels.shape)
            losses.cpu()

        seconds, _ = _timed(compute, device)
        compute_s.append(seconds)
        del train_batches, val_batches

    progress("Evaluating on the test split")
    evaluate_s, _ = _median_after_warmup(
        lambda _: {role: evaluate(m, test, labels) for role, m in models.items()},
        repeats,
        device,
    )
    return {
        "preset": preset,
        "backbone": backbone,
        "load_s": load_s,
        "pretrain_multi_epoch_s": pretrain_s["multi"],
        "pretrain_text_epoch_s": pretrain_s["text"],
        "distill_epoch_s": statistics.median(epoch_s[1:]),
        "distill_compute_only_s": statistics.median(compute_s[1:]),
        "evaluate_s": evaluate_s,
        "peak_rss_mb": peak_rss_mb(),
        "cuda_max_allocated_mb": (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        ),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }


def measure_backbones(
    preset: str,
    backbones: list[str],
    repeats: int,
    device: torch.device,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """M_multi's pretraining epoch (median of ``repeats`` after a warm-up) with each backbone,
    back to back on the same loaded data in this process, and its ratio to the dialogue
    network's."""
    synth_preset, config_name = PRESETS[preset]
    with tempfile.TemporaryDirectory(prefix="mrd-bench-") as tmp:
        progress(f"Writing synthetic {synth_preset} feature files")
        write_synthetic(synth_preset, Path(tmp), seed)
        cfg, _ = load_config(config_name)
        corpus = load_corpus(cfg.dataset, Path(tmp))
    train, val = (split_tensors(corpus, s, device) for s in ("train", "val"))
    epoch_s: dict[str, float] = {}
    for name in backbones:
        cfg, _ = load_config(config_name, overrides={"model": {"backbone": name}})
        seed_everything(seed)
        step = ClassifierStep(
            build_model(corpus, cfg, "multi", device), train, cfg.pretrain, corpus.num_classes
        )
        generator = torch.Generator().manual_seed(seed)
        progress(f"Pretraining epochs of M_multi = {name}")
        epoch_s[name], _ = _median_after_warmup(
            lambda epoch, step=step, generator=generator: run_epoch(
                step, epoch, generator, val, corpus.label_names
            ),
            repeats,
            device,
        )
    base = epoch_s.get("dialogue")
    return {
        "preset": preset,
        "pretrain_multi_epoch_s": epoch_s,
        "ratio_to_dialogue": {n: (t / base if base else None) for n, t in epoch_s.items()},
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }


def target_status(result: dict[str, Any]) -> dict[str, bool]:
    """Which of the issue's targets the figures meet (they are set for the IEMOCAP preset)."""
    met = {k: result[k] <= limit for k, limit in TARGETS.items()}
    ratio = result["distill_epoch_s"] / result["distill_compute_only_s"]
    met["distill_epoch_s / distill_compute_only_s"] = ratio <= MAX_DATA_OVERHEAD
    return met


def render(result: dict[str, Any], repeats: int, load_avg: tuple[float, float]) -> Table:
    with_targets = result["preset"] == "iemocap"
    table = Table(
        title=f"mrd throughput, {result['preset']} preset, default config, "
        f"M_multi backbone {result['backbone']}",
        caption=(
            f"device {result['device']}, torch threads {result['torch_threads']}, "
            f"{os.cpu_count()} CPUs; median of {repeats} after a warm-up; "
            f"load average {load_avg[0]:.1f} before, {load_avg[1]:.1f} after"
        ),
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    if with_targets:
        table.add_column("target", justify="right")
        table.add_column("met", justify="center")
    met = target_status(result) if with_targets else {}
    ratio = result["distill_epoch_s"] / result["distill_compute_only_s"]
    rows: list[tuple[str, str, str]] = [
        ("load_s", f"{result['load_s']:.2f} s", ""),
        ("pretrain_multi_epoch_s", f"{result['pretrain_multi_epoch_s']:.2f} s", "<= 4 s"),
        ("pretrain_text_epoch_s", f"{result['pretrain_text_epoch_s']:.2f} s", "<= 4 s"),
        ("distill_epoch_s", f"{result['distill_epoch_s']:.2f} s", "<= 7 s"),
        ("distill_compute_only_s", f"{result['distill_compute_only_s']:.2f} s", ""),
        ("distill_epoch_s / distill_compute_only_s", f"{ratio:.3f}", "<= 1.10"),
        ("evaluate_s", f"{result['evaluate_s']:.3f} s", ""),
        ("peak_rss_mb", f"{result['peak_rss_mb']:.0f} MB", "<= 1500 MB"),
    ]
    if result["cuda_max_allocated_mb"] is not None:
        rows.append(("cuda_max_allocated_mb", f"{result['cuda_max_allocated_mb']:.0f} MB", ""))
    for name, value, target in rows:
        if with_targets:
            mark = "" if name not in met else ("[green]yes" if met[name] else "[red]no")
            table.add_row(name, value, target, mark)
        else:
            table.add_row(name, value)
    return table


def main(
    preset: Annotated[
        Preset, typer.Option(help="Corpus size: iemocap, meld, or tiny (a quick check).")
    ] = Preset.iemocap,
    repeats: Annotated[
        int, typer.Option(min=1, help="Repetitions per figure (after one warm-up).")
    ] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch intra-op threads (default: torch's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data and the models.")] = 0,
    backbone: Annotated[
        str,
        typer.Option(
            help="M_multi's network: dialogue, foal or dual. Several, comma-separated, time "
            "only M_multi's pretraining epoch of each, back to back, with the ratio to the "
            "dialogue network's (which is then added if missing)."
        ),
    ] = "dialogue",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")
    ] = False,
) -> None:
    """Time loading, pretraining and distillation epochs and evaluation at full corpus size."""
    try:
        dev = resolve_device(device)
    except MRDError as exc:
        err_console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from None
    if threads is not None:
        torch.set_num_threads(threads)
    names = [b.strip() for b in backbone.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKBONES]
    if unknown or not names:
        err_console.print(
            f"[red]Error:[/red] unknown backbone {', '.join(unknown) or repr(backbone)}; use "
            f"{', '.join(BACKBONES)}."
        )
        raise typer.Exit(2)
    load_before = os.getloadavg()[0]
    if len(names) > 1:
        names = ["dialogue", *[n for n in names if n != "dialogue"]]
        with err_console.status("Starting") as status:
            result = measure_backbones(
                preset.value, names, repeats, dev, seed, lambda msg: status.update(msg + "...")
            )
        result["load_average"] = [load_before, os.getloadavg()[0]]
        if as_json:
            print(json.dumps(_plain(result)))
            return
        Console().print(render_backbones(result, repeats))
        return
    with err_console.status("Starting") as status:
        result = measure(
            preset.value,
            repeats,
            dev,
            seed,
            progress=lambda msg: status.update(msg + "..."),
            backbone=names[0],
        )
    if as_json:
        print(json.dumps({k: _plain(result[k]) for k in KEYS}))
    else:
        Console().print(render(result, repeats, (load_before, os.getloadavg()[0])))
    if dev.type == "cpu" and torch.get_num_threads() > 1 and load_before >= BUSY_LOAD:
        err_console.print(
            f"[yellow]Note:[/yellow] other processes were using the CPUs (load average "
            f"{load_before:.1f}). With more than one torch thread, OpenMP threads wait for "
            "each other on a busy machine and an epoch can take several times longer; "
            "compare with --threads 1."
        )


def render_backbones(result: dict[str, Any], repeats: int) -> Table:
    before, after = result["load_average"]
    table = Table(
        title=f"M_multi's pretraining epoch by backbone, {result['preset']} preset, default config",
        caption=(
            f"device {result['device']}, torch threads {result['torch_threads']}, "
            f"{os.cpu_count()} CPUs; median of {repeats} after a warm-up, back to back in one "
            f"process; load average {before:.1f} before, {after:.1f} after"
        ),
    )
    for col in ("backbone", "epoch", "ratio to dialogue", f"<= {MAX_BACKBONE_RATIO:g}x"):
        table.add_column(col, justify="left" if col == "backbone" else "right")
    for name, seconds in result["pretrain_multi_epoch_s"].items():
        ratio = result["ratio_to_dialogue"][name]
        table.add_row(
            name,
            f"{seconds:.2f} s",
            f"{ratio:.2f}",
            "[green]yes" if ratio <= MAX_BACKBONE_RATIO else "[red]no",
        )
    return table


def _plain(value: Any) -> Any:
    """Floats rounded for reading (inside mappings and lists too); everything else as is."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return round(float(value), 4)
    return value


if __name__ == "__main__":
    typer.run(main)

"""`mrd tune` benchmark: one study with pruning and the same study without, on a dataset.

Prepares the pretrained pair and partition once (reused from ``--run-dir`` when current),
then runs ``--trials`` trials with the median pruner and the same number without it (same
seed, same search space, same storage, two studies), and reports each study's wall time,
time per trial and per distillation epoch, its best validation W-F1, and the share of
distillation epochs the pruner saved: ``1 - epochs(pruned study) / epochs(unpruned study)``
(and, within the pruned study, the share of its planned epochs it did not run). The machine's
load average before and after is reported with the times, since they mean little without it.
Test labels are never read (``mrd tune`` never reads them).

    python benchmarks/tune.py path/to/emorynlp.yaml --trials 20 --threads 2
    python benchmarks/tune.py synthetic --trials 4 --config tiny.yaml --json
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from mrd_cli.core.events import Event
from mrd_cli.core.session import Session
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_text
from mrd_cli.recipes.partition import ensure_partitioned
from mrd_cli.recipes.tune import default_storage, require_optuna, tune

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _study(session: Session, name: str, storage: str, prune: bool, **kw: Any) -> dict[str, Any]:
    optuna = require_optuna()
    try:  # a fresh study each time: an old one would be reused, not timed
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass
    start = time.perf_counter()
    result = tune(session, study_name=name, storage=storage, prune=prune, **kw)
    wall = time.perf_counter() - start
    n = result.counts["finished"]
    return {
        "study": name,
        "prune": prune,
        "wall_s": wall,
        "trials": n,
        "complete": result.counts["complete"],
        "pruned": result.counts["pruned"],
        "s_per_trial": wall / max(n, 1),
        "epochs_run": result.epochs_run,
        "epochs_planned": result.epochs_planned,
        "s_per_epoch": wall / max(result.epochs_run, 1),
        "best_value": result.best["value"] if result.best else None,
        "best_params": result.best["params"] if result.best else None,
    }


def _steps_and_trials(console: Console) -> Callable[[Event], None]:
    """The events this benchmark prints: the pipeline's steps and each finished trial."""

    def show(event: Event) -> None:
        if event.kind == "step":
            console.print(f"step: {event.text}")
        elif event.kind == "trial":
            row = event.payload["row"]
            console.print(
                f"  trial {row['number']}: {row['state']}, "
                f"{row['epochs_run']}/{row['epochs_planned']} epochs, value {row['value']}"
            )

    return show


@app.command()
def main(
    dataset: Annotated[str, typer.Argument(help="Dataset YAML path (or a built-in name).")],
    trials: Annotated[int, typer.Option(min=1, help="Trials per study.")] = 20,
    seeds: Annotated[int, typer.Option(min=1, help="Distillation seeds per trial.")] = 1,
    target: Annotated[str, typer.Option(help="text, multi or both.")] = "text",
    space: Annotated[
        Path | None, typer.Option(help="Search space YAML (default: built-in).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Config overrides (e.g. fewer epochs).")
    ] = None,
    run_dir: Annotated[Path, typer.Option(help="Run directory (pretrained pair, studies).")] = Path(
        "runs/bench-tune"
    ),
    seed: Annotated[int | None, typer.Option(help="Seed (sampler and training).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "cpu",
    prune_startup: Annotated[int, typer.Option(min=0)] = 5,
    prune_warmup: Annotated[int, typer.Option(min=0)] = 1,
    skip_unpruned: Annotated[
        bool, typer.Option(help="Run the pruned study only (no saving figure).")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    torch.set_num_threads(threads)
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = Console(stderr=True)
    try:
        session = Session.open(
            dataset, config, None, run_dir, device, {"seed": seed} if seed is not None else None
        )
    except MRDError as exc:
        console.print(f"Error: {exc}")
        raise typer.Exit(2) from None
    load_before = os.getloadavg()
    start = time.perf_counter()
    ensure_partitioned(session, on_event=_steps_and_trials(console))
    prepare = time.perf_counter() - start
    storage = default_storage(session)
    (session.run.root / "tune").mkdir(parents=True, exist_ok=True)
    common = dict(
        trials=trials,
        seeds=seeds,
        target=target,
        space=space,
        prune_startup=prune_startup,
        prune_warmup=prune_warmup,
        on_event=_steps_and_trials(console),
    )
    studies = []
    for prune in (True, False) if not skip_unpruned else (True,):
        name = f"bench-{session.corpus.name}-{target}-{'prune' if prune else 'noprune'}"
        console.print(f"study {name} ({trials} trials)")
        studies.append(_study(session, name, storage, prune, **common))
    report: dict[str, Any] = {
        "dataset": session.corpus.name,
        "device": str(session.device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "prepare_s": prepare,
        "trials": trials,
        "seeds": seeds,
        "target": target,
        "studies": studies,
    }
    pruned = studies[0]
    report["pruned_share_of_planned_epochs"] = 1 - pruned["epochs_run"] / max(
        pruned["epochs_planned"], 1
    )
    if len(studies) == 2:
        unpruned = studies[1]
        report["epochs_saved_vs_unpruned"] = 1 - pruned["epochs_run"] / max(
            unpruned["epochs_run"], 1
        )
        report["wall_saved_vs_unpruned"] = 1 - pruned["wall_s"] / max(unpruned["wall_s"], 1e-9)
    if out:
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    if json_out:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"mrd tune on {report['dataset']}: {trials} trials x {seeds} seed(s), "
        f"{report['torch_threads']} threads, load {load_before[0]:.1f} -> "
        f"{report['load_average_after'][0]:.1f}",
        title_justify="left",
    )
    for col in ("study", "wall s", "s/trial", "s/epoch", "complete", "pruned", "epochs", "best"):
        table.add_column(col, justify="right")
    for s in studies:
        table.add_row(
            s["study"],
            f"{s['wall_s']:.0f}",
            f"{s['s_per_trial']:.1f}",
            f"{s['s_per_epoch']:.2f}",
            str(s["complete"]),
            str(s["pruned"]),
            f"{s['epochs_run']}/{s['epochs_planned']}",
            "" if s["best_value"] is None else f"{s['best_value']:.2f}",
        )
    Console(width=160).print(table)
    Console().print(
        f"prepare (pretrain + partition, or reuse): {prepare:.0f} s; pruner skipped "
        f"{report['pruned_share_of_planned_epochs']:.0%} of its planned epochs"
        + (
            f"; {report['epochs_saved_vs_unpruned']:.0%} fewer epochs and "
            f"{report['wall_saved_vs_unpruned']:.0%} less wall time than without pruning"
            if "epochs_saved_vs_unpruned" in report
            else ""
        )
    )


if __name__ == "__main__":
    app()

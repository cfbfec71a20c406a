"""How much the cross-fitted partition depends on how long its fold models train.

A shorter fold-model schedule would be the plainest way to make the partition (most of
``mrd run``'s time) cheaper. This trains each role's fold models (``recipes.partition``'s
``cross_fitted_predictions``, as in ``mrd partition``) with ``pretrain.epochs`` set to each
of ``--epochs`` (the first is the reference, normally the dataset's default), for each seed,
and reports per schedule: the fold models' out-of-fold accuracy, the share of training
utterances in each group, and the share of utterances whose group equals the reference
partition's. With two seeds or more it also gives how well two seeds of the same schedule
agree: the yardstick for "the same partition". Nothing is chosen on the test split (the
test split is not read). Early stopping is as configured, so the times show what each
schedule costs.

    python benchmarks/fold_schedule.py --dataset data/emorynlp/emorynlp.yaml --epochs 40,20,10
    python benchmarks/fold_schedule.py --dataset iemocap --data-dir DIR --epochs 60,30 --seeds 0
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mrd_cli.core.device import set_threads
from mrd_cli.core.partition import GROUPS, partition_by_agreement
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import Session
from mrd_cli.recipes.partition import cross_fitted_predictions

ROLES = ("multi", "text")


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what}: comma-separated integers, e.g. 40,20") from None
    if not values or min(values) < (1 if what == "--epochs" else 0):
        raise typer.BadParameter(f"{what}: at least one value, each >= 1 (seeds >= 0)")
    return values


def main(
    dataset: Annotated[
        str, typer.Option("--dataset", help="A dataset name or a dataset YAML (as mrd takes).")
    ],
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Directory of the feature files.")
    ] = None,
    epochs: Annotated[
        str, typer.Option("--epochs", help="Fold-model schedules, the reference first: 40,20,10.")
    ] = "40,20,10",
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds, comma-separated.")] = "0,1",
    threads: Annotated[int, typer.Option("--threads", help="torch threads.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    schedule, seed_list = _ints(epochs, "--epochs"), _ints(seeds, "--seeds")
    set_threads(threads)
    console = Console(stderr=True)
    rows, codes = [], {}
    for seed in seed_list:
        session = Session.open(dataset, None, data_dir, None, "cpu", {"seed": seed})
        train = session.tensors("train")
        real = train.mask.cpu().numpy()
        y = train.labels.cpu().numpy()[real]
        for n in schedule:
            cfg = copy.deepcopy(session.cfg)
            cfg.pretrain.epochs = n
            start = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="mrd-fold-schedule-") as tmp:
                # The fold models' resumable states go to a scratch run directory.
                sub = session.derive(cfg, RunDir(Path(tmp)))
                oof = cross_fitted_predictions(sub, cfg.partition.folds)
            preds = {r: oof[r].cpu().numpy()[real] for r in ROLES}
            seconds = time.perf_counter() - start
            codes[seed, n] = partition_by_agreement(y, preds["multi"], preds["text"])
            row = {
                "seed": seed,
                "epochs": n,
                "seconds": round(seconds, 1),
                **{f"oof_acc_{r}": round(float((preds[r] == y).mean()) * 100, 2) for r in ROLES},
                "group_share": {
                    g: round(float((codes[seed, n] == i).mean()) * 100, 1)
                    for i, g in enumerate(GROUPS)
                },
                "same_group_as_reference": round(
                    float((codes[seed, n] == codes[seed, schedule[0]]).mean()) * 100, 2
                ),
            }
            rows.append(row)
            console.print(f"seed {seed}, {n} epochs: {json.dumps(row)}")
    seed_agreement = (
        {
            n: round(float((codes[seed_list[0], n] == codes[seed_list[1], n]).mean()) * 100, 2)
            for n in schedule
        }
        if len(seed_list) > 1
        else {}
    )
    report = {
        "dataset": dataset,
        "folds": session.cfg.partition.folds,
        "reference_epochs": schedule[0],
        "rows": rows,
        "seed_agreement": {str(k): v for k, v in seed_agreement.items()},
    }
    if json_out:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    table = Table(title=f"Fold-model schedule vs partition ({dataset})")
    for col in (
        "seed",
        "epochs",
        "time",
        "OOF acc multi",
        "OOF acc text",
        *GROUPS,
        "same group as ref.",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["seed"]),
            str(r["epochs"]),
            f"{r['seconds']:.0f} s",
            f"{r['oof_acc_multi']:.1f}%",
            f"{r['oof_acc_text']:.1f}%",
            *(f"{r['group_share'][g]:.1f}%" for g in GROUPS),
            f"{r['same_group_as_reference']:.1f}%",
        )
    Console().print(table)
    if seed_agreement:
        console.print(
            f"Seed {seed_list[0]} vs seed {seed_list[1]}, same group: "
            + ", ".join(f"{n} epochs {v:.1f}%" for n, v in seed_agreement.items())
        )


if __name__ == "__main__":
    typer.run(main)

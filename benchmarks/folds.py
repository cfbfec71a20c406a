"""Fold models trained together vs one after another, measured back to back in one process.

The cross-fitted partition trains ``folds`` models per role. This times, for each role,
``--epochs`` epochs of the K fold models trained one after another
(``recipes.pretrain.train_role``) and the same K models trained together
(``recipes.pretrain.train_role_stacked``), alternating the order over ``--repeats``
rounds, on the full-size synthetic corpus with the dataset's default config and early
stopping off. The ratio of the two is what to compare on a busy machine: both are measured
under the same load.

    python benchmarks/folds.py --preset iemocap --epochs 2
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from mrd_cli.core.partition import fold_assignment
from mrd_cli.core.session import Session
from mrd_cli.data.synthetic import write_synthetic
from mrd_cli.recipes.pretrain import train_role, train_role_stacked


def main(
    preset: Annotated[str, typer.Option("--preset", help="iemocap or meld.")] = "iemocap",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per model.")] = 2,
    repeats: Annotated[int, typer.Option("--repeats", help="Rounds (order alternates).")] = 2,
    threads: Annotated[int, typer.Option("--threads", help="torch threads.")] = 1,
) -> None:
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mrd-folds-") as tmp:
        write_synthetic(preset, Path(tmp) / "data", 0)
        overrides = {"pretrain": {"epochs": epochs, "patience": 0}}
        session = Session.open(
            preset, None, Path(tmp) / "data", Path(tmp) / "run", "cpu", overrides
        )
        train, val = session.tensors("train"), session.tensors("val")
        folds = session.cfg.partition.folds
        assignment = fold_assignment(train.num_dialogues, folds, 0)
        parts = [train.subset(np.flatnonzero(assignment != k)) for k in range(folds)]
        seeds = [1000 * (k + 1) for k in range(folds)]
        for role in ("multi", "text"):

            def sequential(role: str = role) -> None:
                for part, seed in zip(parts, seeds):
                    train_role(session, role, part, val, seed)

            def together(role: str = role) -> None:
                train_role_stacked(session, role, list(zip(parts, seeds)), val)

            times: dict[str, list[float]] = {"sequential": [], "together": []}
            for r in range(repeats):
                order = [("sequential", sequential), ("together", together)]
                for name, fn in order if r % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            row = {
                "role": role,
                "folds": folds,
                "epochs": epochs,
                "sequential_s": times["sequential"],
                "together_s": times["together"],
                "speedup": sum(times["sequential"]) / sum(times["together"]),
                "load_avg": os.getloadavg(),
            }
            print(
                f"{preset} {role}: {folds} folds x {epochs} epochs: sequential "
                f"{min(times['sequential']):.1f} s, together {min(times['together']):.1f} s "
                f"(x{row['speedup']:.2f}), load {row['load_avg'][0]:.1f}",
                file=sys.stderr,
            )
            rows.append(row)
    sys.stdout.write(
        json.dumps({"preset": preset, "threads": threads, "rows": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    typer.run(main)

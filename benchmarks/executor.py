"""An ablation's cells with the local executor and with the Ray executor, on this machine.

Writes the full-size synthetic corpus (``--preset iemocap``: IEMOCAP's 5810 + 1623
utterances, 6 classes) to a temporary directory, pretrains and partitions once with the
dataset's default config (the pair every cell distils from; not timed), then times the
``--seeds`` x 4 variant cells (MRD, w/o MIC, w/o ILC, w/o RCL) of ``mrd ablate``: once
with the local executor (one cell after another in this process), once with the Ray
executor on a Ray runtime of ``--workers`` CPUs started here (one worker per core, each cell
one task of one CPU). Both run with ``--threads`` torch threads per cell and start from
copies of the same pretrained pair, so their results must be equal (checked). The Ray wall
time includes starting the runtime (given apart as ``ray_start_s``).

    python benchmarks/executor.py                             # 5 seeds, default epochs
    python benchmarks/executor.py --seeds 2 --distill-epochs 5 --json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from mrd_cli.config import ExecutorConfig
from mrd_cli.core.executor import LocalExecutor, RayExecutor, ray_runtime_env, require_ray
from mrd_cli.core.session import Session
from mrd_cli.data.synthetic import write_synthetic
from mrd_cli.recipes.ablate import COMPONENTS, ablate
from mrd_cli.recipes.partition import ensure_partitioned


def main(
    preset: Annotated[str, typer.Option("--preset", help="iemocap or meld.")] = "iemocap",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per variant.")] = 5,
    distill_epochs: Annotated[
        int | None,
        typer.Option("--distill-epochs", help="Distillation epochs (default: the config's)."),
    ] = None,
    pretrain_epochs: Annotated[
        int | None,
        typer.Option("--pretrain-epochs", help="Pretraining epochs (default: the config's)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="CPUs of the Ray runtime.")] = 2,
    threads: Annotated[int, typer.Option("--threads", help="torch threads per cell.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    ray = require_ray()
    torch.set_num_threads(threads)
    overrides = {
        "threads": threads,
        "pretrain": {"epochs": pretrain_epochs},
        "distill": {"epochs": distill_epochs},
        # Equal results are checked on the cells; the summary's bootstrap is not what is timed.
        "ablate": {"bootstrap": 0},
    }
    variants = [(c,) for c in COMPONENTS]
    with tempfile.TemporaryDirectory(prefix="mrd-executor-") as tmp:
        data = Path(tmp) / "data"
        write_synthetic(preset, data, 0)
        base = Session.open(preset, None, data, Path(tmp) / "base", "cpu", overrides)
        start = time.perf_counter()
        ensure_partitioned(base)
        prepare_s = time.perf_counter() - start
        runs, walls = {}, {}
        for name in ("local", "ray"):
            root = Path(tmp) / name
            shutil.copytree(base.run.root, root)
            session = Session.open(preset, None, data, root, "cpu", overrides)
            start = time.perf_counter()
            if name == "local":
                executor = LocalExecutor()
            else:
                ray.init(
                    num_cpus=workers,
                    include_dashboard=False,
                    configure_logging=False,
                    log_to_driver=False,
                    runtime_env=ray_runtime_env(),
                )
                executor = RayExecutor(ExecutorConfig(cpus_per_task=1))
                walls["ray_start_s"] = time.perf_counter() - start
            loads = os.getloadavg()
            runs[name] = ablate(session, variants, seeds, executor=executor)
            walls[f"{name}_s"] = time.perf_counter() - start
            walls[f"{name}_load_before"] = loads
            walls[f"{name}_load_after"] = os.getloadavg()
            if name == "ray":
                ray.shutdown()
        cells = len(runs["local"].computed)
        result = {
            "preset": preset,
            "seeds": seeds,
            "variants": 1 + len(variants),
            "cells": cells,
            "distill_epochs": base.cfg.distill.epochs,
            "pretrain_epochs": base.cfg.pretrain.epochs,
            "partition": base.cfg.partition.method,
            "threads_per_cell": threads,
            "ray_workers": workers,
            "cpu_count": os.cpu_count(),
            "prepare_s": round(prepare_s, 1),
            **{k: round(v, 1) if isinstance(v, float) else v for k, v in walls.items()},
            "speedup": round(walls["local_s"] / walls["ray_s"], 2),
            "equal_results": runs["local"].to_dict() == runs["ray"].to_dict(),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        }
    if json_out:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{preset}: {cells} cells ({seeds} seeds x {1 + len(variants)} variants, "
        f"{result['distill_epochs']} distillation epochs, {threads} thread(s) each)\n"
        f"  local executor: {result['local_s']:.1f} s\n"
        f"  ray executor, {workers} workers: {result['ray_s']:.1f} s "
        f"(of which starting Ray {result['ray_start_s']:.1f} s); speedup {result['speedup']:.2f}x\n"
        f"  results equal: {result['equal_results']}; {result['uptime']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    typer.run(main)

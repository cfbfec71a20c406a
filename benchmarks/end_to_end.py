"""End-to-end benchmark: ``mrd run`` at IEMOCAP and MELD size, with the time of each step.

For each preset, writes the full-size synthetic corpus (``mrd data synth --preset ...``)
to a temporary directory once, then runs ``mrd run`` with the dataset's default config for
each thread count in a fresh process and a fresh run directory, and reads the per-step wall
times (load, pretrain, partition, distill, evaluate) from the ``timings`` key of its
``--json`` output. ``total_s`` is the command's own sum of steps; ``process_s`` adds Python
start-up and imports, as a user waits for them.

``--source DIR`` times another checkout of the package instead (for a before/after table):
a checkout whose ``mrd run`` has no ``timings`` is driven step by step through its library
(``Session.open``, ``pretrain``, ``partition``, ``distill``, ``evaluate``: the calls
``mrd run`` makes) with ``torch.set_num_threads``.

    python benchmarks/end_to_end.py                          # both presets, 1 and 2 threads
    python benchmarks/end_to_end.py --preset iemocap --threads 1 --json
    python benchmarks/end_to_end.py --source /tmp/mrd-before --preset meld --threads 1
    python benchmarks/end_to_end.py --preset iemocap --threads 1 --executor processes

``--executor processes`` passes the same option to ``mrd run``: the cross-fitted fold
models (each a unit of its own) then train side by side in worker processes (each with
``--threads``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("load", "pretrain", "partition", "distill", "evaluate")

# Drives a checkout through its library, step by step, as `mrd run` does (for checkouts
# whose `mrd run --json` has no `timings`).
LIBRARY_DRIVER = r"""
import json, sys, time, torch
threads, dataset, data_dir, run_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch.set_num_threads(threads)
from mrd_cli.core.session import Session
from mrd_cli.recipes.pretrain import pretrain
from mrd_cli.recipes.partition import partition
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.evaluate import evaluate
t = {}
s = time.perf_counter(); session = Session.open(dataset, None, data_dir, run_dir, "cpu")
session.tensors("train"); session.tensors("val"); session.tensors("test")
t["load"] = time.perf_counter() - s
s = time.perf_counter(); pretrain(session); t["pretrain"] = time.perf_counter() - s
s = time.perf_counter(); partition(session); t["partition"] = time.perf_counter() - s
s = time.perf_counter(); distill(session); t["distill"] = time.perf_counter() - s
s = time.perf_counter(); result = evaluate(session).to_dict(); t["evaluate"] = time.perf_counter() - s
print(json.dumps({"timings": t, "result": result}))
"""


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"{one:.2f} {five:.2f} {fifteen:.2f}"
    except OSError:
        return "n/a"


def _has_timings(source: Path) -> bool:
    return "timings" in (source / "mrd_cli" / "cli" / "run.py").read_text()


def run_once(
    source: Path, preset: str, data_dir: Path, threads: int, executor: str = "local"
) -> dict[str, Any]:
    """One `mrd run` (or its library equivalent) in a fresh process and run directory."""
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="mrd-e2e-run-") as run_dir:
        if _has_timings(source):
            cmd = [sys.executable, "-m", "mrd_cli", "run", "--dataset", preset]
            cmd += ["--data-dir", str(data_dir), "--run-dir", run_dir, "--device", "cpu"]
            cmd += ["--threads", str(threads), "--executor", executor, "--json"]
        else:
            if executor != "local":
                raise RuntimeError(f"{source} predates `mrd run --executor {executor}`")
            cmd = [sys.executable, "-c", LIBRARY_DRIVER, str(threads), preset, str(data_dir)]
            cmd.append(run_dir)
        load_before = _load()
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=source, capture_output=True, text=True)
        process_s = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout)
    timings = out["timings"]
    steps = {k: float(timings[k]) for k in STEPS}
    result = out.get("result", out)
    return {
        "preset": preset,
        "threads": threads,
        "executor": executor,
        "steps_s": steps,
        "total_s": sum(steps.values()),
        "process_s": process_s,
        "test_wf1": {r: m["weighted_f1"] for r, m in result["models"].items()}
        if "models" in result
        else None,
        "load_avg_before": load_before,
        "load_avg_after": _load(),
    }


def main(
    preset: Annotated[
        list[str] | None, typer.Option("--preset", help="iemocap and/or meld.")
    ] = None,
    threads: Annotated[list[int] | None, typer.Option("--threads", help="Thread counts.")] = None,
    source: Annotated[
        Path, typer.Option("--source", help="Checkout of mrd to time (default: this one).")
    ] = ROOT,
    data_seed: Annotated[int, typer.Option("--data-seed", help="Seed of the data.")] = 0,
    executor: Annotated[
        str, typer.Option("--executor", help="mrd run's --executor: local or processes.")
    ] = "local",
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    presets = preset or ["iemocap", "meld"]
    thread_counts = threads or [1, 2]
    console = Console(stderr=True)
    rows: list[dict[str, Any]] = []
    for name in presets:
        with tempfile.TemporaryDirectory(prefix="mrd-e2e-data-") as data_dir:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mrd_cli",
                    "data",
                    "synth",
                    "--preset",
                    name,
                    "--out",
                    data_dir,
                    "--seed",
                    str(data_seed),
                ],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            for n in thread_counts:
                console.print(
                    f"mrd run, {name} size, {n} thread(s), executor {executor}, load {_load()} ..."
                )
                row = run_once(source.resolve(), name, Path(data_dir), n, executor)
                console.print(
                    "  "
                    + ", ".join(f"{k} {v:.1f} s" for k, v in row["steps_s"].items())
                    + f"; total {row['total_s']:.1f} s, process {row['process_s']:.1f} s"
                )
                rows.append(row)
    report = {"source": str(source.resolve()), "cpu_count": os.cpu_count(), "runs": rows}
    if json_out:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    table = Table(title="mrd run, per step (s)")
    for col in ("preset", "threads", "executor", *STEPS, "total", "process", "load avg before"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["preset"],
            str(r["threads"]),
            r["executor"],
            *(f"{r['steps_s'][k]:.1f}" for k in STEPS),
            f"{r['total_s']:.1f}",
            f"{r['process_s']:.1f}",
            r["load_avg_before"],
        )
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)

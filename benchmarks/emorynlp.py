"""EmoryNLP benchmark: real transcripts -> `mrd features` -> the MRD pipeline over several seeds.

Builds the features from the public EmoryNLP CSVs with the default encoder (timed from a
cold cache and again from the cache), then, per seed, runs `mrd pretrain`, `mrd partition`,
`mrd distill` and `mrd evaluate` through the dataset YAML that `mrd features` wrote, each as
its own process, timed. Beside them, on the same features (the text input mrd uses: the
layer-normalised mean of roberta1..4): a majority-class baseline and a context-free
logistic regression whose C is chosen on the dev split. Nothing is chosen on the test split.

EmoryNLP has no audio or video: the dataset YAML declares text only, so "multi" here is the
multimodal model run on the text alone (the same input as the text model).

    python benchmarks/emorynlp.py                              # 5 seeds, ../shared/data/emorynlp
    python benchmarks/emorynlp.py --csv-dir DIR --seeds 2 --json
    python benchmarks/emorynlp.py --seeds 1 --config fast.yaml # extra YAML for every step
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from mrd_cli.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV_DIR = ROOT.parent / "shared" / "data" / "emorynlp"
MODELS = ("pretrain/text", "pretrain/multi", "distill/text", "distill/multi")
STEPS = ("pretrain", "partition", "distill", "evaluate")
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)

err = Console(stderr=True)


def mrd(args: list[str], threads: int, capture_json: bool = False) -> tuple[float, Any]:
    """Run `python -m mrd_cli ARGS` from this checkout; (seconds, parsed JSON or None)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "mrd_cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"`mrd {' '.join(args)}` failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return seconds, (json.loads(out.stdout) if capture_json else None)


def text_input(roberta_file: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(features, labels) per split from the RoBERTa pickle we wrote: layer-norm, then mean."""
    with open(roberta_file, "rb") as fh:  # written by `mrd features` in this run
        rob = pickle.load(fh)
    labels, layers, ids = rob[1], rob[3:7], {"train": rob[8], "dev": rob[10], "test": rob[9]}
    x, y = {}, {}
    for split, dids in ids.items():
        stack = np.stack([np.concatenate([np.stack(layer[d]) for d in dids]) for layer in layers])
        mean = stack.mean(-1, keepdims=True)
        var = stack.var(-1, keepdims=True)
        x[split] = ((stack - mean) / np.sqrt(var + 1e-5)).mean(0)
        y[split] = np.concatenate([np.array(labels[d]) for d in dids])
    return x, y


def baselines(roberta_file: Path, threads: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):  # BLAS threads fight over a shared CPU otherwise
        return _baselines(roberta_file, LogisticRegression, f1_score)


def _baselines(roberta_file: Path, LogisticRegression: Any, f1_score: Any) -> dict[str, Any]:
    x, y = text_input(roberta_file)
    t0 = time.perf_counter()
    majority = int(np.bincount(y["train"]).argmax())
    maj_wf1 = 100 * f1_score(
        y["test"], np.full_like(y["test"], majority), average="weighted", zero_division=0
    )
    dev_scores = {}
    fitted = {}
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=3000).fit(x["train"], y["train"])
        dev_scores[c] = 100 * f1_score(y["dev"], model.predict(x["dev"]), average="weighted")
        fitted[c] = model
    best_c = max(C_GRID, key=lambda c: dev_scores[c])  # chosen on dev only
    lr_test = 100 * f1_score(y["test"], fitted[best_c].predict(x["test"]), average="weighted")
    return {
        "majority": {"class_index": majority, "test_weighted_f1": maj_wf1},
        "logistic_regression": {
            "C": best_c,
            "dev_weighted_f1_by_C": {str(c): s for c, s in dev_scores.items()},
            "test_weighted_f1": lr_test,
        },
        "seconds": time.perf_counter() - t0,
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(
    csv_dir: Annotated[
        Path,
        typer.Option("--csv-dir", help="Folder of emorynlp_{train,dev,test}_final.csv."),
    ] = DEFAULT_CSV_DIR,
    work: Annotated[
        Path | None,
        typer.Option("--work", help="Folder for features, cache and runs (default: temporary)."),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Training seeds 0..N-1.")] = 5,
    threads: Annotated[
        int, typer.Option("--threads", help="CPU threads of the training steps.")
    ] = 1,
    encode_threads: Annotated[
        int, typer.Option("--encode-threads", help="CPU threads of the text encoder.")
    ] = 2,
    config: Annotated[
        Path | None, typer.Option("--config", help="Extra YAML passed to every step.")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Use this embedding cache as it is (the first build is then not cold); "
            "default: a fresh one in --work.",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Features from the EmoryNLP CSVs, then the pipeline over seeds; prints test W-F1."""
    if not csv_dir.is_dir():
        raise SystemExit(f"EmoryNLP CSV folder not found: {csv_dir} (--csv-dir).")
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="mrd-emorynlp-")
        work = Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    data, cache = work / "data", work / "cache"
    cold_cache = cache_dir is None
    if cold_cache:
        shutil.rmtree(cache, ignore_errors=True)
    else:
        cache = cache_dir
    load_before = os.getloadavg()
    features_args = ["features", "--layout", "emorynlp", "--csv-dir", str(csv_dir.resolve())]
    features_args += ["--out", str(data), "--cache-dir", str(cache), "--force", "--json"]

    err.print(f"[bold]features[/] ({'cold cache' if cold_cache else 'given cache'})")
    cold_s, cold = mrd(features_args, encode_threads, capture_json=True)
    err.print(f"  {cold_s:.1f} s")
    err.print("[bold]features[/] (from the cache)")
    warm_s, warm = mrd(features_args, encode_threads, capture_json=True)
    err.print(f"  {warm_s:.1f} s")
    dataset_yaml = data / "emorynlp.yaml"

    err.print("[bold]baselines[/] (majority class, logistic regression with C chosen on dev)")
    base = baselines(data / "emorynlp_features_roberta.pkl", threads)
    err.print(f"  {base['seconds']:.1f} s")

    extra = ["--config", str(config.resolve())] if config else []
    per_seed: list[dict[str, Any]] = []
    for seed in range(seeds):
        run_dir = work / "runs" / f"seed{seed}"
        common = ["--dataset", str(dataset_yaml), "--run-dir", str(run_dir), *extra]
        times: dict[str, float] = {}
        for step in STEPS:
            err.print(f"[bold]seed {seed}:[/] {step}")
            # evaluate reads the seed from the checkpoints; training steps take it.
            own = [] if step == "evaluate" else ["--seed", str(seed), "--device", "cpu"]
            times[step], result = mrd([step, *common, *own, "--json"], threads, True)
            err.print(f"  {times[step]:.1f} s")
        scores = {m: result["models"][m]["weighted_f1"] for m in MODELS if m in result["models"]}
        per_seed.append({"seed": seed, "test_weighted_f1": scores, "seconds": times})
        err.print(f"  test W-F1: {scores}")
        partial = {"per_seed": per_seed, "baselines": base}
        atomic_write_text(work / "results.partial.json", json.dumps(partial, indent=2) + "\n")

    summary = {
        m: mean_std([s["test_weighted_f1"][m] for s in per_seed])
        for m in MODELS
        if per_seed and all(m in s["test_weighted_f1"] for s in per_seed)
    }
    step_times = {st: mean_std([s["seconds"][st] for s in per_seed]) for st in STEPS if per_seed}
    results = {
        "csv_dir": str(csv_dir),
        "seeds": seeds,
        "threads": threads,
        "config": str(config) if config else None,
        "features": {
            "first_build_cold": cold_cache,
            "cold_wall_s": cold_s,
            "cold_text_encoding_s": cold["seconds"]["text"],
            "cached_wall_s": warm_s,
            "cached_text_s": warm["seconds"]["text"],
            "utterances": sum(c["utterances"] for c in cold["counts"].values()),
            "unique_texts": cold["text"]["unique_texts"],
            "encoder": cold["text"]["model"],
            "dim": cold["text"]["dim"],
        },
        "baselines": base,
        "models": {m: {"mean": v[0], "std": v[1]} for m, v in summary.items()},
        "step_seconds_per_seed": {st: {"mean": v[0], "std": v[1]} for st, v in step_times.items()},
        "per_seed": per_seed,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    atomic_write_text(work / "results.json", json.dumps(results, indent=2) + "\n")
    if json_out:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        print_results(results)
    if tmp is not None:
        tmp.cleanup()


def print_results(r: dict[str, Any]) -> None:
    console = Console(width=120)
    table = Table(title=f"EmoryNLP test W-F1 (%), {r['seeds']} seed(s), mean ± std")
    table.add_column("model")
    table.add_column("test W-F1", justify="right")
    b = r["baselines"]
    table.add_row("majority class (train)", f"{b['majority']['test_weighted_f1']:.2f}")
    lr = b["logistic_regression"]
    table.add_row(
        f"logistic regression, context-free (C={lr['C']:g} chosen on dev)",
        f"{lr['test_weighted_f1']:.2f}",
    )
    for m, v in r["models"].items():
        name = m + (" (text only: no audio/video)" if m.endswith("multi") else "")
        table.add_row(name, f"{v['mean']:.2f} ± {v['std']:.2f}")
    console.print(table)
    f = r["features"]
    times = Table(title="Time per step (s)")
    times.add_column("step")
    times.add_column("seconds", justify="right")
    first = "cold" if f["first_build_cold"] else "given cache"
    times.add_row(
        f"features, {first} ({f['utterances']} utterances, {f['unique_texts']} distinct)",
        f"{f['cold_wall_s']:.1f} (encoding {f['cold_text_encoding_s']:.1f})",
    )
    times.add_row("features, from the cache", f"{f['cached_wall_s']:.1f}")
    times.add_row("baselines (both)", f"{b['seconds']:.1f}")
    for st, v in r["step_seconds_per_seed"].items():
        times.add_row(f"{st} (per seed)", f"{v['mean']:.1f} ± {v['std']:.1f}")
    console.print(times)
    console.print(
        f"CPU threads per training step: {r['threads']}; load average before "
        f"{r['load_average_before'][0]:.2f}, after {r['load_average_after'][0]:.2f}."
    )


if __name__ == "__main__":
    typer.run(main)

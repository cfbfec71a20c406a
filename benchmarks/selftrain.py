"""Few labels: self-training (`mrd selftrain`) against supervised training on the same labels.

For each labelled fraction and seed, on one dataset, in one process:

- ``supervised``: the SEMI network trained on the labelled dialogues alone (no contrastive
  pretraining, no pool);
- ``round 0``: contrastive pretraining on labelled + pool dialogues, then supervised
  training on the labelled ones (round 0 of `mrd selftrain`: supervised-only, same labels);
- ``self-trained``: the last round of the same `mrd selftrain` run.

The seed draws the labelled dialogues, so every method of a seed sees the same labels.
Test W-F1 mean ± std over seeds, the paired t-test over seeds and the paired bootstrap over
test utterances (every seed's predictions, the same resamples) compare self-training with
both baselines. Every epoch is chosen on validation; the test split is only scored. Per
round, the accepted pseudo-labels per class and their accuracy against the hidden labels
(a diagnostic) are kept in the JSON.

    python benchmarks/selftrain.py --dataset synthetic --fractions 0.1,0.3 --seeds 5
    python benchmarks/selftrain.py --dataset /path/emorynlp.yaml --config extra.yaml
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from mrd_cli.core.metrics import weighted_f1
from mrd_cli.core.session import Session
from mrd_cli.core.stats import mean_std, paired_bootstrap_wf1, paired_t_test
from mrd_cli.core.training import predict
from mrd_cli.io import atomic_write_text
from mrd_cli.recipes.selftrain import selftrain

METHODS = ("supervised", "round0", "selftrained")


def test_predictions(session: Session, path: Path) -> np.ndarray:
    model, _ = session.load_model(path, "mrd selftrain")
    data = session.tensors("test")
    return predict(model, data)[data.mask].cpu().numpy()


def one_cell(
    dataset: str, config: Path | None, fraction: float, seed: int, transductive: bool, tmp: Path
) -> dict[str, Any]:
    """The three methods on one (fraction, seed): test predictions and the run's rounds."""
    base = {"seed": seed, "selftrain": {"labeled_fraction": fraction, "transductive": transductive}}
    run = tmp / f"f{fraction}-s{seed}"
    t0 = time.perf_counter()
    session = Session.open(dataset, config, None, run / "semi", "cpu", base)
    result = selftrain(session)
    semi_s = time.perf_counter() - t0
    plain = Session.open(
        dataset,
        config,
        None,
        run / "plain",
        "cpu",
        {**base, "selftrain": {**base["selftrain"], "contrastive_epochs": 0, "rounds": 0}},
    )
    t0 = time.perf_counter()
    selftrain(plain)
    plain_s = time.perf_counter() - t0
    data = session.tensors("test")
    y_true = data.labels[data.mask].cpu().numpy()
    last = result.rounds[-1]["round"]
    preds = {
        "supervised": test_predictions(plain, plain.run.selftrain_round("multi", 0)),
        "round0": test_predictions(session, session.run.selftrain_round("multi", 0)),
        "selftrained": test_predictions(session, session.run.selftrain_round("multi", last)),
    }
    c = session.corpus.num_classes
    return {
        "fraction": fraction,
        "seed": seed,
        "num_classes": c,
        "y_true": y_true,
        "preds": preds,
        "test_wf1": {m: weighted_f1(y_true, p, c) for m, p in preds.items()},
        "rounds": result.rounds,
        "messages": result.messages,
        "labelled_dialogues": result.labelled_dialogues,
        "pool_dialogues": result.pool_dialogues,
        "seconds": {"selftrain": semi_s, "supervised": plain_s},
    }


def summarise(cells: list[dict[str, Any]], num_classes: int, resamples: int) -> dict[str, Any]:
    """Mean ± std per method, and self-training against each baseline (paired)."""
    y_true = cells[0]["y_true"]
    out: dict[str, Any] = {"seeds": len(cells)}
    for m in METHODS:
        mean, std = mean_std([c["test_wf1"][m] for c in cells])
        out[m] = {"mean": mean, "std": std}
    for base in ("supervised", "round0"):
        diff, p_t = paired_t_test(
            [c["test_wf1"]["selftrained"] for c in cells], [c["test_wf1"][base] for c in cells]
        )
        lo, hi, p_boot = paired_bootstrap_wf1(
            y_true,
            [c["preds"]["selftrained"] for c in cells],
            [c["preds"][base] for c in cells],
            num_classes,
            resamples=resamples,
        )
        out[f"vs_{base}"] = {
            "mean_gain": diff,
            "p_paired_t": p_t,
            "bootstrap_ci95": [lo, hi],
            "p_bootstrap": p_boot,
        }
    accepted = [r["accepted"]["total"] for c in cells for r in c["rounds"] if r.get("accepted")]
    diag = [
        r["accepted"]["diagnostic_accuracy"]
        for c in cells
        for r in c["rounds"]
        if r.get("accepted") and r["accepted"]["diagnostic_accuracy"] is not None
    ]
    out["accepted_per_round_mean"] = float(np.mean(accepted)) if accepted else 0.0
    out["diagnostic_accuracy_mean"] = float(np.mean(diag)) if diag else None
    out["rounds_run_mean"] = float(np.mean([len(c["rounds"]) - 1 for c in cells]))
    return out


def _ms(s: dict[str, Any], m: str) -> str:
    return f"{s[m]['mean']:.2f} ± {s[m]['std']:.2f}"


def _gain(s: dict[str, Any], base: str) -> str:
    g = s[f"vs_{base}"]
    p_t = "n/a" if g["p_paired_t"] is None else f"{g['p_paired_t']:.3f}"
    return f"{g['mean_gain']:+.2f} ({p_t} / {g['p_bootstrap']:.3f})"


def markdown(dataset: str, summary: dict[str, Any], transductive: bool) -> str:
    mode = " (TRANSDUCTIVE)" if transductive else ""
    lines = [
        f"| {dataset}{mode} labelled | supervised | round 0 (contrastive + supervised) | "
        "self-trained | gain vs supervised (p t / p boot) | gain vs round 0 (p t / p boot) | "
        "accepted / round | pseudo-label acc. (diag.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fraction, s in summary.items():
        diag = s["diagnostic_accuracy_mean"]
        lines.append(
            f"| {float(fraction):.0%} | {_ms(s, 'supervised')} | {_ms(s, 'round0')} | "
            f"{_ms(s, 'selftrained')} | {_gain(s, 'supervised')} | {_gain(s, 'round0')} | "
            f"{s['accepted_per_round_mean']:.0f} | {'-' if diag is None else f'{diag:.1f}%'} |"
        )
    return "\n".join(lines)


def main(
    dataset: Annotated[str, typer.Option("--dataset", help="Built-in name or dataset YAML.")] = (
        "synthetic"
    ),
    config: Annotated[
        Path | None, typer.Option("--config", help="Extra YAML for every run.")
    ] = None,
    fractions: Annotated[
        str, typer.Option("--fractions", help="Comma-separated labelled fractions.")
    ] = "0.1,0.3",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds 0..N-1 per fraction.")] = 5,
    transductive: Annotated[
        bool, typer.Option("--transductive", help="Pool = hidden training + test features.")
    ] = False,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")] = 1000,
    threads: Annotated[int, typer.Option("--threads", help="torch threads.")] = 1,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write every figure here as JSON.")
    ] = None,
) -> None:
    torch.set_num_threads(threads)
    summary: dict[str, Any] = {}
    raw: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mrd-selftrain-") as tmp:
        for fraction in [float(f) for f in fractions.split(",")]:
            cells = []
            for seed in range(seeds):
                cell = one_cell(dataset, config, fraction, seed, transductive, Path(tmp))
                cells.append(cell)
                print(
                    f"fraction {fraction} seed {seed}: "
                    + ", ".join(f"{m} {v:.2f}" for m, v in cell["test_wf1"].items())
                    + f" | rounds {len(cell['rounds']) - 1}, "
                    + f"{cell['seconds']['selftrain']:.0f}s + {cell['seconds']['supervised']:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
            summary[str(fraction)] = summarise(cells, cells[0]["num_classes"], resamples)
            raw += [{k: v for k, v in c.items() if k not in ("y_true", "preds")} for c in cells]
    name = Path(dataset).stem if dataset.endswith((".yaml", ".yml")) else dataset
    print(markdown(name, summary, transductive))
    if json_out:
        atomic_write_text(
            json_out,
            json.dumps(
                {"dataset": name, "transductive": transductive, "summary": summary, "cells": raw},
                indent=2,
                default=float,
            )
            + "\n",
        )


if __name__ == "__main__":
    typer.run(main)

"""MRD on the positive control: does distillation raise the text model, and is it the teacher?

Per seed: pretrain the pair and partition it (out-of-fold), then distil the same pair once
per variant, each with ``distill.keep_start: false`` so that the best distillation epoch on
validation is always kept; from it and the pretrained pair the script also works out what
the start guard (``keep_start: true``, ``start_confidence``) would have chosen, with the same
paired bootstrap over validation dialogues that ``Trainer.selected`` runs. Variants:

- ``mrd``: MRD as configured (MIC + ILC + RCL);
- ``permuted``: the negative control, ``distill.teacher_control: permuted``;
- ``uniform``: the constant-teacher control, ``distill.teacher_control: uniform``;
- ``no_ilc``, ``no_rcl``: the ablations; ``no_mic``: continued training with the
  classification losses and ILC only (more epochs, no partner).

Everything is chosen on validation; test is only scored. The summary compares every variant
with the pretrained model of the same role and MRD with every variant: mean ± std over seeds,
a paired t-test over seeds and a paired bootstrap 95% interval over test utterances.

    python benchmarks/controls.py --out /tmp/controls/run         # 5 seeds, configs/control.yaml
    python benchmarks/controls.py --dataset synthetic --seeds 3 --out DIR
    python benchmarks/controls.py --config extra.yaml --variants mrd,permuted --out DIR
    python benchmarks/controls.py --summarise DIR                 # the tables of a finished DIR

``--scratch`` (candidate cause (a) of docs/controls.md, this script only): the text model
starts distillation from a fresh initialisation instead of its pretrained weights, as the
student of generalised distillation does; the pretrained text model (trained on the hard
labels alone) stays the baseline every row is compared with.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
import yaml

from mrd_cli.core.rundir import ROLES
from mrd_cli.core.session import Session, role_seed
from mrd_cli.core.stats import gain_probability, mean_std, paired_bootstrap_wf1, paired_t_test
from mrd_cli.core.training import predict
from mrd_cli.recipes.ablate import apply_without
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.partition import ensure_partitioned

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "mrd": {},
    "permuted": {"teacher_control": "permuted"},
    "uniform": {"teacher_control": "uniform"},
    "no_ilc": {"without": ("ilc",)},
    "no_rcl": {"without": ("rcl",)},
    "no_mic": {"without": ("mic",)},
}
# Per model and variant: the raw best distillation epoch, and what the start guard keeps.
SELECTIONS = ("raw", "guarded")


def variant_cfg(cfg, name: str, distill_overrides: dict[str, Any]):
    spec = VARIANTS[name]
    out = copy.deepcopy(cfg)
    for key, value in distill_overrides.items():
        setattr(out.distill, key, value)
    out = apply_without(out, spec.get("without", ()))
    out.distill.keep_start = False
    out.distill.teacher_control = spec.get("teacher_control", "none")
    return out


def scores(session: Session, model) -> dict[str, Any]:
    """Flat predictions on val and test, and their W-F1."""
    from mrd_cli.core.metrics import classification_report

    out = {}
    for split in ("val", "test"):
        data = session.tensors(split)
        pred = predict(model, data)[data.mask].cpu().numpy()
        y = data.labels[data.mask].cpu().numpy()
        out[split] = pred
        rep = classification_report(y, pred, session.corpus.label_names)
        out[f"{split}_wf1"] = rep["weighted_f1"]
    return out


def run_seed(
    dataset: str,
    config: Path | None,
    seed: int,
    out: Path,
    variants: list[str],
    tag: str = "default",
    distill_overrides: dict[str, Any] | None = None,
    scratch: bool = False,
) -> dict:
    session = Session.open(
        dataset, config=config, run_dir=out / f"seed{seed}", device="cpu", overrides={"seed": seed}
    )
    ensure_partitioned(session, replace_pretrained=True)
    val = session.tensors("val")
    dialogue = np.nonzero(val.mask.cpu().numpy())[0]
    y_val = val.labels[val.mask].cpu().numpy()
    k = session.corpus.num_classes
    start = {
        r: scores(session, session.load_model(session.run.pretrained(r), "pretrain")[0])
        for r in ROLES
    }
    cells: dict[str, Any] = {"pretrained": {r: _flat(start[r]) for r in ROLES}}
    for name in variants:
        cell_dir = out / f"seed{seed}" / tag / name
        sub = session.derive(variant_cfg(session.cfg, name, distill_overrides or {}), session.run)
        if scratch:
            text_from_scratch(sub)
        result = distill(sub, out_dir=cell_dir)
        cells[name] = {}
        for role in ROLES:
            model, ckpt = session.load_model(cell_dir / f"{role}.pt", "distill")
            best = scores(session, model)
            p_gain = gain_probability(
                y_val, best["val"], start[role]["val"], dialogue, k, seed=seed
            )
            need = session.cfg.distill.start_confidence
            beats = best["val_wf1"] > start[role]["val_wf1"]
            taken = beats and (need <= 0 or p_gain >= need)
            guarded = best if taken else start[role]
            cells[name][role] = {
                "raw": _flat(best),
                "guarded": _flat(guarded),
                "epoch": ckpt["epoch"],
                "p_gain": p_gain,
                "guard_took_distilled": bool(taken),
                "history": result.selected[role].history,
            }
    return {
        "seed": seed,
        "labels": session.corpus.label_names,
        "y_test": session.tensors("test").labels[session.tensors("test").mask].tolist(),
        "cells": cells,
    }


def text_from_scratch(sub: Session) -> None:
    """Make ``distill(sub)`` start the text model from a fresh initialisation (seeded as
    pretraining seeds it, input statistics from the training split) instead of loading its
    pretrained weights; the multimodal model still loads its own."""
    load = sub.load_model

    def load_model(path, made_by):
        model, ckpt = load(path, made_by)
        if ckpt.get("role") != "text" or ckpt.get("stage") != "pretrain":
            return model, ckpt
        torch.manual_seed(role_seed(sub.cfg, "text", sub.cfg.seed))
        fresh = sub.build_model("text").to(sub.device)
        sel = sub.tensors("train").select(fresh.modalities)
        fresh.set_input_stats(sel.features, sel.mask)
        return fresh, ckpt

    sub.load_model = load_model


def _flat(s: dict[str, Any]) -> dict[str, Any]:
    return {"val_wf1": s["val_wf1"], "test_wf1": s["test_wf1"], "test_pred": s["test"].tolist()}


def compare(seeds: list[dict], y: np.ndarray, k: int, a, b) -> dict[str, Any]:
    """a - b over seeds: a, b map a seed record to a flat score dict."""
    va = [a(s)["test_wf1"] for s in seeds]
    vb = [b(s)["test_wf1"] for s in seeds]
    diff, p = paired_t_test(va, vb)
    lo, hi, p_boot = paired_bootstrap_wf1(
        y,
        [np.asarray(a(s)["test_pred"]) for s in seeds],
        [np.asarray(b(s)["test_pred"]) for s in seeds],
        k,
    )
    m, sd = mean_std(va)
    return {
        "mean": m,
        "std": sd,
        "diff": diff,
        "p_paired_t": p,
        "ci95": [lo, hi],
        "p_bootstrap": p_boot,
        "per_seed_diff": [x - z for x, z in zip(va, vb, strict=True)],
    }


def summarise(seeds: list[dict]) -> dict[str, Any]:
    y = np.asarray(seeds[0]["y_test"])
    k = len(seeds[0]["labels"])
    variants = [v for v in seeds[0]["cells"] if v != "pretrained"]
    out: dict[str, Any] = {}
    for role in ROLES:
        pre = [s["cells"]["pretrained"][role]["test_wf1"] for s in seeds]
        rows: dict[str, Any] = {"pretrained": dict(zip(("mean", "std"), mean_std(pre)))}
        for v in variants:
            for sel in SELECTIONS:
                key = f"{v}/{sel}"
                rows[key] = compare(
                    seeds,
                    y,
                    k,
                    lambda s, role=role, v=v, sel=sel: s["cells"][v][role][sel],
                    lambda s, role=role: s["cells"]["pretrained"][role],
                )
                rows[key]["guard_took"] = sum(
                    s["cells"][v][role]["guard_took_distilled"] for s in seeds
                )
                rows[key]["epochs"] = [s["cells"][v][role]["epoch"] for s in seeds]
                rows[key]["p_gain"] = [round(s["cells"][v][role]["p_gain"], 3) for s in seeds]
                if v != "mrd":
                    rows[key]["mrd_minus_this"] = compare(
                        seeds,
                        y,
                        k,
                        lambda s, role=role, sel=sel: s["cells"]["mrd"][role][sel],
                        lambda s, role=role, v=v, sel=sel: s["cells"][v][role][sel],
                    )
        out[role] = rows
    return out


def print_tables(summary: dict[str, Any]) -> None:
    for role, rows in summary.items():
        print(f"\n## {role} model (test W-F1, mean ± std over seeds)")
        pre = rows["pretrained"]
        print(f"pretrained {pre['mean']:.2f} ± {pre['std']:.2f}")
        print(
            "| variant | selection | W-F1 | Δ vs pretrained | p (t) | 95% CI | "
            "guard took distilled | MRD − variant (p t; CI) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for key, r in rows.items():
            if key == "pretrained":
                continue
            v, sel = key.split("/")
            vs = r.get("mrd_minus_this")
            vs_txt = (
                (
                    f"{vs['diff']:+.2f} ({_p(vs['p_paired_t'])}; "
                    f"[{vs['ci95'][0]:+.2f}, {vs['ci95'][1]:+.2f}])"
                )
                if vs
                else "—"
            )
            print(
                f"| {v} | {sel} | {r['mean']:.2f} ± {r['std']:.2f} | {r['diff']:+.2f} | "
                f"{_p(r['p_paired_t'])} | [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] | "
                f"{r['guard_took']}/{len(r['epochs'])} | {vs_txt} |"
            )


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3f}"


def main(
    out: Annotated[Path, typer.Option(help="Directory for runs and results.json.")],
    dataset: Annotated[str, typer.Option(help="Dataset name or YAML.")] = str(
        ROOT / "configs" / "control.yaml"
    ),
    config: Annotated[Path | None, typer.Option(help="Extra YAML overrides.")] = None,
    seeds: Annotated[int, typer.Option(help="Training seeds 0..N-1.")] = 5,
    variants: Annotated[str, typer.Option(help="Comma-separated variants.")] = ",".join(VARIANTS),
    tag: Annotated[str, typer.Option(help="Name of this set of distill overrides.")] = "default",
    distill_set: Annotated[
        list[str] | None,
        typer.Option("--distill", help="KEY=VALUE of the distill section, for every variant."),
    ] = None,
    scratch: Annotated[
        bool, typer.Option(help="Start the text model from a fresh initialisation (cause a).")
    ] = False,
    summarise_only: Annotated[
        bool, typer.Option("--summarise", help="Only print the tables of OUT.")
    ] = False,
) -> None:
    """MRD, its ablations and the negative controls on a corpus, over seeds."""
    from mrd_cli.core.device import set_threads

    set_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    results = out / f"seeds-{tag}.jsonl"
    overrides = {}
    for item in distill_set or []:
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    if not summarise_only:
        names = [v for v in variants.split(",") if v]
        done = {json.loads(line)["seed"] for line in results.open()} if results.exists() else set()
        for seed in range(seeds):
            if seed in done:
                continue
            record = run_seed(dataset, config, seed, out, names, tag, overrides, scratch)
            record["distill_overrides"] = overrides
            record["scratch"] = scratch
            with results.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            print(f"seed {seed} done", flush=True)
    records = [json.loads(line) for line in results.open()]
    summary = summarise(records)
    (out / f"summary-{tag}.json").write_text(json.dumps(summary, indent=1))
    print_tables(summary)


if __name__ == "__main__":
    typer.run(main)

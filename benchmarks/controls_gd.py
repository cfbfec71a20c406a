"""The positive control checked without MRD: plain generalised distillation with linear models.

Generalised distillation (Lopez-Paz, Bottou, Schölkopf, Vapnik, ICLR 2016) trains a teacher on
privileged features (here: text, audio and visual) and a student on the regular ones (text
only) on a mix of the hard labels and the teacher's softened predictions:

    student = argmin_f  (1 - lam) * CE(y_i, f(x_i)) + lam * CE(s_i, f(x_i)),
    s_i = softmax(teacher logits(x*_i) / T).

Here every model is a context-free multinomial logistic regression on the utterance features
of the synthetic ``control`` preset (text input: the layer-normalised mean of roberta1..4,
as mrd reads it). A soft target is fitted exactly by repeating each row once per class with
the target's probability as its sample weight. Everything (C of each model, lam, T) is chosen
on the dev split; test is only scored. Per data seed it reports the test W-F1 of

- ``teacher``: LR on all modalities, hard (noisy) training labels;
- ``student_hard``: LR on text, hard labels (lam = 0);
- ``student_gd``: LR on text, generalised distillation (lam, T chosen on dev);
- ``student_permuted``: the negative control, the same with the teacher's soft targets
  permuted across training utterances (lam, T chosen on dev the same way).

    python benchmarks/controls_gd.py                     # 5 data seeds, frozen knobs
    python benchmarks/controls_gd.py --seeds 3 --knob text_noise=2.5   # calibration only
    python benchmarks/controls_gd.py --json
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import numpy as np
import typer

from mrd_cli.config import DatasetConfig
from mrd_cli.core.stats import mean_std, paired_t_test
from mrd_cli.data.formats import _PARSERS
from mrd_cli.data.synthetic import PRESETS, generate_with_truth

C_GRID = (0.01, 0.1, 1.0, 10.0)
LAMBDAS = (0.25, 0.5, 0.75, 1.0)
TEMPERATURES = (1.0, 2.0, 5.0)
VARIANTS = ("teacher", "student_hard", "student_gd", "student_permuted")


def control_arrays(
    seed: int, preset: str = "control", knobs: dict[str, Any] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Per split ("train", "val", "test"): text, all-modality features and labels."""
    p = PRESETS[preset]
    kn = dataclasses.replace(p.knobs, **(knobs or {})) if p.knobs else None
    layout, features, roberta, _ = generate_with_truth(preset, seed, kn)
    cfg = DatasetConfig(name=preset, layout=layout, label_names=list(p.label_names))
    corpus = _PARSERS[layout](features, roberta, cfg, preset)
    out = {}
    for split in ("train", "val", "test"):
        dialogues = corpus.split(split)
        text = np.concatenate([d.features["text"] for d in dialogues])
        every = np.concatenate(
            [
                np.concatenate([d.features[m] for m in ("text", "audio", "visual")], 1)
                for d in dialogues
            ]
        )
        out[split] = {
            "text": text,
            "all": every,
            "y": np.concatenate([d.labels for d in dialogues]),
        }
    return out


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return [(x - mu) / sd for x in (train, *others)]


def fit_soft(x: np.ndarray, target: np.ndarray, c: float, k: int):
    """Multinomial LR fitted to soft targets [n, k] (rows repeated per class, weighted)."""
    from sklearn.linear_model import LogisticRegression

    n = len(x)
    rows = np.tile(x, (k, 1))
    labels = np.repeat(np.arange(k), n)
    weights = target.T.reshape(-1)
    keep = weights > 0
    model = LogisticRegression(C=c, max_iter=2000)
    return model.fit(rows[keep], labels[keep], sample_weight=weights[keep])


def wf1(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return 100.0 * f1_score(y, pred, average="weighted", zero_division=0)


def predict(model, x: np.ndarray, k: int) -> np.ndarray:
    """Predicted class in 0..k-1 (a class absent from the fit is never predicted)."""
    return model.classes_[model.decision_function(x).argmax(1)]


def best_on_dev(candidates: list[tuple[Any, Any]], xv: np.ndarray, yv: np.ndarray, k: int):
    """(setting, model) with the highest dev W-F1; ties keep the first."""
    scores = [wf1(yv, predict(m, xv, k)) for _, m in candidates]
    return candidates[int(np.argmax(scores))]


def run_seed(
    seed: int,
    knobs: dict[str, Any] | None = None,
    grid: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] = (
        C_GRID,
        LAMBDAS,
        TEMPERATURES,
    ),
) -> dict[str, Any]:
    """One data seed: every model's test W-F1 and the settings chosen on dev from ``grid``
    (C values, lambdas, temperatures)."""
    c_grid, lambdas, temperatures = grid
    d = control_arrays(seed, knobs=knobs)
    k = len(PRESETS["control"].label_names)
    ytr, yv, yte = d["train"]["y"], d["val"]["y"], d["test"]["y"]
    onehot = np.eye(k)[ytr]
    xa_tr, xa_v, xa_te = standardise(d["train"]["all"], d["val"]["all"], d["test"]["all"])
    xt_tr, xt_v, xt_te = standardise(d["train"]["text"], d["val"]["text"], d["test"]["text"])

    teachers = [(c, fit_soft(xa_tr, onehot, c, k)) for c in C_GRID]  # the full grid
    t_c, teacher = best_on_dev(teachers, xa_v, yv, k)
    t_logits = teacher.decision_function(xa_tr)
    perm = np.random.default_rng(seed + 1000).permutation(len(ytr))

    def soft(temp: float, permuted: bool) -> np.ndarray:
        z = t_logits / temp
        s = np.exp(z - z.max(1, keepdims=True))
        s /= s.sum(1, keepdims=True)
        return s[perm] if permuted else s

    hard = [((c,), fit_soft(xt_tr, onehot, c, k)) for c in c_grid]
    out: dict[str, Any] = {"seed": seed, "teacher_C": t_c}
    out["teacher"] = wf1(yte, predict(teacher, xa_te, k))
    setting, model = best_on_dev(hard, xt_v, yv, k)
    out["student_hard"], out["student_hard_setting"] = wf1(yte, predict(model, xt_te, k)), setting
    for name, permuted in (("student_gd", False), ("student_permuted", True)):
        cands = [
            ((c, lam, temp), fit_soft(xt_tr, (1 - lam) * onehot + lam * soft(temp, permuted), c, k))
            for c in c_grid
            for lam in lambdas
            for temp in temperatures
        ]
        setting, model = best_on_dev(cands, xt_v, yv, k)
        out[name], out[f"{name}_setting"] = wf1(yte, predict(model, xt_te, k)), setting
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for v in VARIANTS:
        m, s = mean_std([r[v] for r in rows])
        summary[v] = {"mean": m, "std": s}
    for v in ("student_gd", "student_permuted"):
        diff, p = paired_t_test([r[v] for r in rows], [r["student_hard"] for r in rows])
        summary[f"{v}_minus_hard"] = {"mean": diff, "p_paired_t": p}
    return summary


def main(
    seeds: Annotated[int, typer.Option(help="Data seeds 0..N-1 of the control preset.")] = 5,
    knob: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE override of a control knob (calibration only)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Generalised distillation with linear models on the control preset, per data seed."""
    from threadpoolctl import threadpool_limits

    knobs = {}
    for item in knob or []:
        key, value = item.split("=", 1)
        knobs[key] = float(value) if "." in value else int(value)
    with threadpool_limits(1):
        rows = [run_seed(s, knobs) for s in range(seeds)]
    result = {"knobs": knobs, "rows": rows, "summary": summarise(rows)}
    if as_json:
        print(json.dumps(result, indent=1))
        return
    for r in rows:
        print(" ".join(f"{v}={r[v]:.2f}" for v in VARIANTS), r["student_gd_setting"])
    for key, val in result["summary"].items():
        print(key, {k: (round(x, 4) if x is not None else None) for k, x in val.items()})


if __name__ == "__main__":
    typer.run(main)

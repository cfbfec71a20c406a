"""Significance of differences between variants: paired t-test over seeds and a paired
bootstrap over test utterances, so a reader can tell an effect from noise."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def paired_t_test(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """Mean of a - b and the two-sided p-value of a paired t-test (None with < 2 pairs or
    identical pairs)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, None
    sd = d.std(ddof=1)
    if sd == 0:
        return mean, None if mean == 0 else 0.0
    t = mean / (sd / math.sqrt(len(d)))
    return mean, float(2 * stats.t.sf(abs(t), df=len(d) - 1))


def _weighted_f1_from_confusion(conf: np.ndarray) -> np.ndarray:
    """W-F1 (percent) of each confusion matrix in a stack [B, C, C] (rows true)."""
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(float)
    support = conf.sum(2).astype(float)
    predicted = conf.sum(1).astype(float)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum(1, keepdims=True)
    return 100.0 * (f1 * support).sum(1) / np.maximum(total[:, 0], 1)


def paired_bootstrap_wf1(
    y_true: np.ndarray,
    preds_a: list[np.ndarray],
    preds_b: list[np.ndarray],
    num_classes: int,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """95% interval of W-F1(a) - W-F1(b), averaged over seeds, resampling test utterances
    (the same resample for a and b and every seed), and a two-sided bootstrap p-value."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    idx = rng.integers(0, n, size=(resamples, n))
    rows = np.arange(resamples)[:, None] * num_classes * num_classes
    diffs = np.zeros(resamples)
    for pa, pb in zip(preds_a, preds_b, strict=True):
        for pred, sign in ((pa, 1.0), (pb, -1.0)):
            codes = rows + (y_true[idx] * num_classes + pred[idx])
            conf = np.bincount(codes.ravel(), minlength=resamples * num_classes**2)
            conf = conf.reshape(resamples, num_classes, num_classes)
            diffs += sign * _weighted_f1_from_confusion(conf)
    diffs /= len(preds_a)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    return float(lo), float(hi), float(min(p, 1.0))


def gain_probability(
    y_true: np.ndarray,
    pred_new: np.ndarray,
    pred_old: np.ndarray,
    clusters: np.ndarray,
    num_classes: int,
    resamples: int = 1000,
    seed: int = 0,
) -> float:
    """Share of bootstrap resamples in which W-F1(new) > W-F1(old), paired.

    Whole dialogues are resampled (``clusters`` gives each utterance's dialogue index),
    since the utterances of one dialogue are not independent. A tie counts as no gain.
    """
    rng = np.random.default_rng(seed)
    ids, cluster_of = np.unique(clusters, return_inverse=True)
    draws = rng.integers(0, len(ids), size=(resamples, len(ids)))
    counts = np.zeros((resamples, len(ids)))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    weights = counts[:, cluster_of]  # [R, N]: how often each utterance is drawn
    wf1 = []
    for pred in (pred_new, pred_old):
        codes = np.eye(num_classes * num_classes)[y_true * num_classes + pred]  # [N, C*C]
        conf = (weights @ codes).reshape(resamples, num_classes, num_classes)
        wf1.append(_weighted_f1_from_confusion(conf))
    return float((wf1[0] > wf1[1]).mean())


# The marks of a difference's significance in figures and paper tables.
T_TEST_MARKS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
BOOTSTRAP_MARK = "†"
SIGNIFICANCE_LEGEND = (
    "* p < 0.05, ** p < 0.01, *** p < 0.001 (paired t-test over seeds); "
    "† the paired bootstrap 95% interval excludes 0"
)


def significance_marks(p_paired_t: float | None, ci95: list[float | None] | None) -> str:
    """Stars for the paired t-test's p-value (``T_TEST_MARKS``), then a dagger when the
    bootstrap interval ``ci95`` lies wholly on one side of 0; empty when neither holds."""
    stars = next(
        (m for bound, m in T_TEST_MARKS if p_paired_t is not None and p_paired_t < bound), ""
    )
    lo, hi = ci95 if ci95 else (None, None)
    excludes_zero = lo is not None and hi is not None and (lo > 0 or hi < 0)
    return stars + (BOOTSTRAP_MARK if excludes_zero else "")

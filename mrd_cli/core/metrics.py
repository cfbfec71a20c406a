"""Evaluation metrics: thin wrappers over scikit-learn, all figures in percent.

``classification_report`` gives accuracy, weighted F1 (W-F1), macro F1, per-class F1 and
the confusion matrix; ``ambiguity_table`` counts, per true class, the utterances one model
gets right and the other wrong (the paper's pilot study: MCTI and MITC).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """W-F1 in percent: per-class F1 weighted by class support."""
    return 100.0 * float(
        f1_score(
            y_true, y_pred, labels=list(range(num_classes)), average="weighted", zero_division=0
        )
    )


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]
) -> dict[str, Any]:
    """Accuracy, W-F1, macro F1, per-class F1 (percent) and the confusion matrix (counts;
    rows = true class, columns = predicted class)."""
    labels = list(range(len(label_names)))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": 100.0 * float(accuracy_score(y_true, y_pred)),
        "weighted_f1": 100.0
        * float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": 100.0
        * float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class_f1": {name: 100.0 * float(f) for name, f in zip(label_names, per_class)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def row_normalised(matrix: list[list[int]]) -> np.ndarray:
    """Confusion matrix as row percentages (each true class sums to 100; empty rows 0)."""
    m = np.asarray(matrix, dtype=np.float64)
    totals = m.sum(axis=1, keepdims=True)
    return np.divide(100.0 * m, totals, out=np.zeros_like(m), where=totals > 0)


def ambiguity_table(
    y_true: np.ndarray, pred_multi: np.ndarray, pred_text: np.ndarray, label_names: list[str]
) -> dict[str, dict[str, int]]:
    """Per true class: MCTI = multimodal right and text wrong; MITC = the reverse."""
    multi_ok = pred_multi == y_true
    text_ok = pred_text == y_true
    mcti = np.bincount(y_true[multi_ok & ~text_ok], minlength=len(label_names))
    mitc = np.bincount(y_true[~multi_ok & text_ok], minlength=len(label_names))
    return {
        "mcti": {n: int(c) for n, c in zip(label_names, mcti)},
        "mitc": {n: int(c) for n, c in zip(label_names, mitc)},
    }

"""The difficulty partition of training utterances by the two pretrained models (Eq. 9-13).

| group   | text model | multimodal model |
| mcti    | wrong      | right            |  Difficult_1
| mitc    | right      | wrong            |  Difficult_2
| general | wrong      | wrong            |
| simple  | right      | right            |
"""

from __future__ import annotations

import numpy as np

GROUPS = ("mcti", "mitc", "general", "simple")
GROUP_CODE = {g: i for i, g in enumerate(GROUPS)}
# Curriculum-level groups: both difficult subgroups form one stage.
STAGE_GROUPS = {"difficult": ("mcti", "mitc"), "general": ("general",), "simple": ("simple",)}


def partition_by_agreement(
    y_true: np.ndarray, pred_multi: np.ndarray, pred_text: np.ndarray
) -> np.ndarray:
    """Group code (index into ``GROUPS``) of each utterance from the two models' correctness.

    Eq. 9-13: difficult = exactly one model right (MCTI: multimodal right, text wrong; MITC:
    the reverse), general = both wrong, simple = both right.
    """
    multi_ok = pred_multi == y_true
    text_ok = pred_text == y_true
    codes = np.full(y_true.shape, GROUP_CODE["general"], dtype=np.int64)
    codes[multi_ok & ~text_ok] = GROUP_CODE["mcti"]
    codes[~multi_ok & text_ok] = GROUP_CODE["mitc"]
    codes[multi_ok & text_ok] = GROUP_CODE["simple"]
    return codes


def group_counts(
    codes: np.ndarray, y_true: np.ndarray, label_names: list[str]
) -> dict[str, dict[str, int]]:
    """Utterances per group and class (the layout of the paper's Tables 1-2)."""
    out = {}
    for g, code in GROUP_CODE.items():
        per_class = np.bincount(y_true[codes == code], minlength=len(label_names))
        out[g] = {name: int(n) for name, n in zip(label_names, per_class)}
    return out


def fold_assignment(num_dialogues: int, folds: int, seed: int) -> np.ndarray:
    """Seeded fold index of each training dialogue for cross-fitting (whole dialogues, so a
    fold model never sees any utterance of the dialogue it predicts)."""
    if folds > num_dialogues:
        from mrd_cli.errors import MRDError

        raise MRDError(
            f"partition.folds = {folds} but the training split has only {num_dialogues} "
            "dialogues; lower --cross-fit."
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_dialogues)
    assignment = np.empty(num_dialogues, dtype=np.int64)
    assignment[order] = np.arange(num_dialogues) % folds
    return assignment

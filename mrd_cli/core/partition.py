"""The difficulty partition of training utterances by the two pretrained models (Eq. 9-13),
and its file format.

| group   | text model | multimodal model |
| mcti    | wrong      | right            |  Difficult_1
| mitc    | right      | wrong            |  Difficult_2
| general | wrong      | wrong            |
| simple  | right      | right            |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrd_cli.core.groups import GROUP_CODE, GROUPS
from mrd_cli.data.tensors import SplitTensors
from mrd_cli.errors import MRDError
from mrd_cli.io import MAX_JSON_BYTES, file_sha256, read_limited


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


# --------------------------------------------------------------------------------------
# The partition file (RUN/partition.json, format "mrd-partition/1")

PARTITION_FORMAT = "mrd-partition/1"


def partition_document(
    *,
    codes: np.ndarray,
    y_true: np.ndarray,
    lengths: np.ndarray,
    dialogue_ids: list[str],
    label_names: list[str],
    method: str,
    folds: int | None,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """The partition file's content: counts per group and class, each training dialogue's
    groups utterance by utterance, and what it was made from."""
    counts = group_counts(codes, y_true, label_names)
    per_dialogue = np.split(codes, np.cumsum(lengths)[:-1])
    return {
        "format": PARTITION_FORMAT,
        "method": method,
        "folds": folds if method == "cross_fit" else None,
        "split": "train",
        "provenance": provenance,
        "groups_order": list(GROUPS),
        "counts": counts,
        "totals": {g: sum(c.values()) for g, c in counts.items()},
        "groups": {
            did: [GROUPS[c] for c in dialogue_codes.tolist()]
            for did, dialogue_codes in zip(dialogue_ids, per_dialogue)
        },
    }


def read_partition(
    path: Path, dataset: str, data_fingerprint: str, checkpoints: dict[str, Path]
) -> dict[str, Any]:
    """Read a partition file and refuse one made from other checkpoints (by sha256) or data."""
    if not path.is_file():
        raise MRDError(f"No partition at {path}. Run `mrd partition --dataset {dataset}` first.")
    try:
        doc = json.loads(read_limited(path, MAX_JSON_BYTES, "partition file"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MRDError(
            f"{path} is corrupt. Run `mrd partition --dataset {dataset}` again."
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != PARTITION_FORMAT:
        raise MRDError(f"{path} is not an mrd partition file. Run `mrd partition` again.")
    if not _is_well_formed(doc, list(checkpoints)):
        raise MRDError(
            f"{path} is incomplete or was edited by hand. Run `mrd partition --dataset "
            f"{dataset}` again."
        )
    prov = doc["provenance"]
    if prov["data_fingerprint"] != data_fingerprint:
        raise MRDError(
            f"{path} was made from other data than the data loaded now. "
            f"Rerun `mrd partition --dataset {dataset}`."
        )
    for role, ckpt in checkpoints.items():
        if prov["checkpoints"][role]["sha256"] != file_sha256(ckpt):
            raise MRDError(
                f"{path} was made from other checkpoints than {ckpt} (sha256 differs). "
                f"Rerun `mrd partition --dataset {dataset}` after pretraining."
            )
    return doc


def _is_well_formed(doc: dict[str, Any], roles: list[str]) -> bool:
    """The keys and types ``read_partition`` and distillation read, with known group names."""
    prov = doc.get("provenance")
    groups = doc.get("groups")
    totals = doc.get("totals")
    if not (isinstance(prov, dict) and isinstance(groups, dict) and isinstance(totals, dict)):
        return False
    checkpoints = prov.get("checkpoints")
    return (
        "data_fingerprint" in prov
        and isinstance(checkpoints, dict)
        and all(isinstance(checkpoints.get(r), dict) and "sha256" in checkpoints[r] for r in roles)
        and set(totals) == set(GROUPS)
        and all(isinstance(v, int) for v in totals.values())
        and all(isinstance(g, list) and set(g) <= set(GROUPS) for g in groups.values())
    )


def partition_codes(doc: dict[str, Any], train: SplitTensors) -> torch.Tensor:
    """The partition as a [D, L] tensor of group codes aligned with the training tensors."""
    groups = doc["groups"]
    missing = [d for d in train.ids if d not in groups]
    if missing:
        raise MRDError(
            f"The partition has no groups for training dialogue '{missing[0]}'. "
            "Rerun `mrd partition`."
        )
    flat = np.array([GROUP_CODE[g] for d in train.ids for g in groups[d]], dtype=np.int64)
    if flat.shape[0] != train.num_utterances:
        raise MRDError(
            "The partition does not match the training utterances. Rerun `mrd partition`."
        )
    codes = torch.full_like(train.labels, GROUP_CODE["general"])
    codes[train.mask] = torch.as_tensor(flat, device=train.mask.device)
    return codes

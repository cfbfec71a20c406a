"""Check and convert the pieces of one community feature tuple, dialogue by dialogue.

``formats`` assembles a ``Corpus`` from these: a dialogue's entry in one of the tuple's dicts
(``field_entry``), its features as a float32 matrix (``feature_matrix``, charged against the
load's ``ARRAY_BUDGET``), its labels as class indices (``label_indices``) and its speakers as
symbols or one-hot vectors (``speaker_codes``), mapped to indices for the whole corpus by
``speaker_indices``. Every refusal is an ``MRDError`` naming the dialogue and the field.
"""

from __future__ import annotations

import contextvars
from typing import Any

import numpy as np

from mrd_cli.data.layouts import TupleLayout
from mrd_cli.data.safe_pickle import human_size
from mrd_cli.errors import MRDError

__all__ = [
    "ARRAY_BUDGET",
    "feature_matrix",
    "field_entry",
    "label_indices",
    "speaker_codes",
    "speaker_indices",
]


def field_entry(
    fields: dict[str, Any], name: str, did: str, split: str, layout: TupleLayout
) -> Any:
    try:
        return fields[name][did]
    except KeyError:
        raise MRDError(
            f"Dialogue '{did}' of the {split} split is missing from '{name}' in {layout.file}; "
            "the file is incomplete or its dicts and id lists come from different versions. "
            "Use a complete copy of the file."
        ) from None


# Bytes the features read from files may still take when lists become arrays: a pickle can
# list one row a million times (its memo), which costs nothing in the file and everything in
# memory. None: no budget (tuples built in memory).
ARRAY_BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "ARRAY_BUDGET", default=None
)


def _charge_list(value: Any, did: str, modality: str, source: str) -> None:
    """Refuse a list of rows whose array would exceed what is left of the load's budget."""
    budget = ARRAY_BUDGET.get()
    if budget is None or not isinstance(value, (list, tuple)):
        return
    first = value[0] if len(value) else None
    width = len(first) if hasattr(first, "__len__") else 1
    need = len(value) * max(width, 1) * 4
    budget[0] -= need
    if budget[0] < 0:
        raise MRDError(
            f"Dialogue '{did}': the {modality} features ({source}) would expand to "
            f"{human_size(need)}, beyond what the feature files' size allows; the file is "
            "corrupt or crafted (rows repeated by reference). Nothing was allocated. Use the "
            "feature files as distributed."
        )


def feature_matrix(value: Any, did: str, modality: str, source: str) -> np.ndarray:
    """One dialogue's features as float32 ``[n, d]`` (lists of lists, of arrays, or 2-D)."""
    _charge_list(value, did, modality, source)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as exc:
        raise MRDError(
            f"Dialogue '{did}': the {modality} features ({source}) cannot be read as a numeric "
            f"[utterances, dim] array ({exc})."
        ) from None
    if x.ndim != 2:
        raise MRDError(
            f"Dialogue '{did}': the {modality} features ({source}) have shape {x.shape}, "
            "expected [utterances, dim]."
        )
    return x


def label_indices(value: Any, did: str, source: str) -> np.ndarray:
    """One dialogue's labels as int64 (integral floats are accepted; some files store them)."""
    try:
        x = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise MRDError(
            f"Dialogue '{did}': the labels ({source}) are not readable ({exc})."
        ) from None
    integral = x.dtype.kind in "iu" or (
        x.dtype.kind == "f"
        and bool(np.isfinite(x).all())
        and bool((x == np.round(x)).all())
        # Beyond this the cast to int64 is undefined; no class index is that large anyway.
        and bool((np.abs(x) < 2**31).all())
    )
    if x.ndim != 1 or not integral:
        raise MRDError(
            f"Dialogue '{did}': the labels ({source}) must be one integer class index per "
            f"utterance, got {x.dtype} values of shape {x.shape}."
        )
    return x.astype(np.int64)


def speaker_codes(value: Any, did: str, source: str) -> tuple[str, Any]:
    """Classify one dialogue's speakers: ("symbol", [symbols]) or ("vector", (idx, width)).

    IEMOCAP names speakers with symbols ('M', 'F'); MELD with one-hot vectors.
    """
    if isinstance(value, np.ndarray):
        if value.ndim == 2 and value.dtype.kind in "biuf":
            return "vector", (value.argmax(axis=1).astype(np.int64), value.shape[1])
        if value.ndim == 1:
            value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise MRDError(
            f"Dialogue '{did}': the speakers ({source}) must be a list with one entry per "
            f"utterance, got a {type(value).__name__}."
        )
    if all(_is_symbol(s) for s in value):
        return "symbol", list(value)
    try:
        vec = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        vec = np.zeros(0)
    if vec.ndim != 2 or vec.shape[1] == 0 or not np.isfinite(vec).all():
        raise MRDError(
            f"Dialogue '{did}': the speakers ({source}) must be one symbol (e.g. 'M') or one "
            "one-hot vector per utterance."
        )
    return "vector", (vec.argmax(axis=1).astype(np.int64), vec.shape[1])


def _is_symbol(s: Any) -> bool:
    return isinstance(s, (str, bytes, int, np.integer))


def speaker_indices(raw: dict[str, tuple[str, Any]]) -> tuple[dict[str, np.ndarray], int, str]:
    """Map every dialogue's speakers to 0..S-1: symbols by their sorted set, vectors by argmax."""
    kinds = {kind for kind, _ in raw.values()}
    if len(kinds) > 1:
        raise MRDError(
            "Some dialogues give speakers as symbols and others as one-hot vectors; the file "
            "mixes two formats."
        )
    if kinds == {"vector"}:
        width = max(w for _, (_, w) in raw.values())
        return {did: idx for did, (_, (idx, _w)) in raw.items()}, width, f"one-hot ({width})"
    symbols = sorted(
        {s for _, syms in raw.values() for s in syms}, key=lambda s: (type(s).__name__, str(s))
    )
    index = {s: i for i, s in enumerate(symbols)}
    out = {
        did: np.array([index[s] for s in syms], dtype=np.int64) for did, (_, syms) in raw.items()
    }
    return out, max(len(symbols), 1), ", ".join(str(s) for s in symbols)

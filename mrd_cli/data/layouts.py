"""The community feature-file layouts: tuple shapes, file names and label names.

A leaf of the data layer (it imports nothing else from ``mrd_cli.data``): ``formats`` reads
files in these layouts, ``synthetic`` generates tuples in them, and both write them with
``write_iemocap`` / ``write_meld``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_bytes

IEMOCAP_LABELS = ["hap", "sad", "neu", "ang", "exc", "fru"]
MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
DEFAULT_LABELS = {"iemocap": IEMOCAP_LABELS, "meld": MELD_LABELS}

# layout -> (features file, roberta file): the names the community code and CMERC use.
FILE_NAMES = {
    "iemocap": ("IEMOCAP_features.pkl", "iemocap_features_roberta.pkl"),
    "meld": ("MELD_features_raw1.pkl", "meld_features_roberta.pkl"),
}

ROBERTA_LAYERS = ("roberta1", "roberta2", "roberta3", "roberta4")


@dataclass(frozen=True)
class TupleLayout:
    """The fields of one community pickle, in order; which are dicts and which id lists."""

    file: str
    fields: tuple[str, ...]
    id_fields: tuple[str, ...]
    free_fields: tuple[str, ...] = ()  # present but unused, any type

    def describe(self) -> str:
        return f"the {len(self.fields)}-tuple ({', '.join(self.fields)}) of {self.file}"


IEMOCAP_FEATURES = TupleLayout(
    "IEMOCAP_features.pkl",
    (
        "videoIDs",
        "videoSpeakers",
        "videoLabels",
        "videoText",
        "videoAudio",
        "videoVisual",
        "videoSentence",
        "trainVid",
        "testVid",
    ),
    ("trainVid", "testVid"),
)
IEMOCAP_ROBERTA = TupleLayout(
    "iemocap_features_roberta.pkl",
    ("speakers", "labels", *ROBERTA_LAYERS, "sentences", "trainIds", "testIds", "validIds"),
    ("trainIds", "testIds", "validIds"),
)
MELD_FEATURES = TupleLayout(
    "MELD_features_raw1.pkl",
    (*IEMOCAP_FEATURES.fields, "_"),
    ("trainVid", "testVid"),
    ("_",),
)
MELD_ROBERTA = TupleLayout(
    "meld_features_roberta.pkl",
    (
        "speakers",
        "emotion_labels",
        "sentiment_labels",
        *ROBERTA_LAYERS,
        "sentences",
        "trainIds",
        "testIds",
        "validIds",
    ),
    ("trainIds", "testIds", "validIds"),
)


# --------------------------------------------------------------------------------------
# Checking the pieces of a tuple


def unpack(obj: Any, layout: TupleLayout) -> dict[str, Any]:
    """Check that ``obj`` is the tuple ``layout`` describes; return its fields by name.

    Dicts come back with ``str`` keys (MELD ids are ints in the files); id lists as lists of
    ``str`` without duplicates.
    """
    if not isinstance(obj, tuple):
        raise MRDError(
            f"Expected {layout.describe()}, got a {type(obj).__name__}. Is this the right "
            "file for the dataset's layout?"
        )
    if len(obj) != len(layout.fields):
        raise MRDError(
            f"Expected {layout.describe()}, got a {len(obj)}-tuple. Is this the right file "
            "for the dataset's layout?"
        )
    out: dict[str, Any] = {}
    for name, value in zip(layout.fields, obj, strict=True):
        if name in layout.free_fields:
            out[name] = value
        elif name in layout.id_fields:
            out[name] = _id_list(value, name, layout)
        else:
            if not isinstance(value, dict):
                raise MRDError(
                    f"Expected {layout.describe()}, but '{name}' is a {type(value).__name__}, "
                    "not a dict keyed by dialogue id."
                )
            out[name] = _str_keys(value, name, layout)
    return out


def _str_keys(d: dict[Any, Any], name: str, layout: TupleLayout) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        skey = str(key)
        if skey in out:
            raise MRDError(
                f"'{name}' in {layout.file} has two dialogue ids that read as '{skey}'; "
                "dialogue ids must be unique."
            )
        out[skey] = value
    return out


def _id_list(value: Any, name: str, layout: TupleLayout) -> list[str]:
    if isinstance(value, np.ndarray) and value.ndim == 1:
        items: list[Any] = value.tolist()
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, (set, frozenset)):
        items = sorted(value, key=str)
    else:
        raise MRDError(
            f"Expected {layout.describe()}, but '{name}' is a {type(value).__name__}, not a "
            "list of dialogue ids."
        )
    for item in items:
        if not isinstance(item, (str, bytes, int, np.integer)) or isinstance(item, bool):
            raise MRDError(
                f"Expected {layout.describe()}, but '{name}' holds {item!r} "
                f"({type(item).__name__}), not a dialogue id."
            )
    # dict.fromkeys keeps the file's order and drops repeated ids.
    return list(dict.fromkeys(str(i) for i in items))


# --------------------------------------------------------------------------------------
# Writing


def _write(
    out_dir: Path,
    features_tuple: Any,
    roberta_tuple: Any,
    layouts: tuple[TupleLayout, TupleLayout],
) -> list[Path]:
    unpack(features_tuple, layouts[0])
    unpack(roberta_tuple, layouts[1])
    out_dir = Path(out_dir)
    paths = [out_dir / layouts[0].file, out_dir / layouts[1].file]
    for obj, path in zip((features_tuple, roberta_tuple), paths):
        atomic_write_bytes(path, pickle.dumps(obj, protocol=4))
    return paths


def write_iemocap(out_dir: Path, features_tuple: tuple, roberta_tuple: tuple) -> list[Path]:
    """Write the IEMOCAP 9-tuple and RoBERTa 10-tuple under the community file names."""
    return _write(out_dir, features_tuple, roberta_tuple, (IEMOCAP_FEATURES, IEMOCAP_ROBERTA))


def write_meld(out_dir: Path, features_tuple: tuple, roberta_tuple: tuple) -> list[Path]:
    """Write the MELD 10-tuple and RoBERTa 11-tuple under the community file names."""
    return _write(out_dir, features_tuple, roberta_tuple, (MELD_FEATURES, MELD_ROBERTA))

"""Checkpoints: a model's weights plus everything needed to trust and rebuild it.

A checkpoint carries the model spec, label names, the data fingerprint, the seed, the epoch
chosen and its validation metrics, and the effective config. Loading uses
``torch.load(weights_only=True)``; ``check_matches_corpus`` refuses a checkpoint made from
other data instead of combining it silently.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from mrd_cli.core.card import parent, write_card
from mrd_cli.data.corpus import Corpus
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_torch_save, atomic_write_bytes
from mrd_cli.models.dialogue import Backbone, ModelSpec
from mrd_cli.models.registry import BACKBONES, build_backbone

FORMAT = "mrd-checkpoint/1"
REQUIRED = (
    "format",
    "stage",
    "role",
    "label_names",
    "model_spec",
    "data_fingerprint",
    "state_dict",
)


def save_checkpoint(path: Path, model: Backbone, state_dict: dict, **meta: Any) -> None:
    """Write a checkpoint atomically, then its model card beside it (``core/card.py``).
    ``state_dict`` is the selected epoch's weights."""
    payload = {
        "format": FORMAT,
        "model_spec": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        **meta,
    }
    atomic_torch_save(payload, path)
    write_card(path, payload)


def copy_checkpoint(original: Path, copy: Path, what: str) -> dict[str, Any]:
    """Copy the checkpoint ``original`` to ``copy`` byte for byte (atomically) and give the
    copy its card: the original's fields, with the original as its parent (``what``)."""
    atomic_write_bytes(copy, Path(original).read_bytes())
    ckpt = load_checkpoint(copy)
    root = Path(copy).parent.parent  # RUN of RUN/<step>/<role>.pt
    return write_card(copy, {**ckpt, "parents": [parent(what, original, root)]})


def load_checkpoint(path: Path, made_by: str = "mrd pretrain") -> dict[str, Any]:
    """Read a checkpoint, refusing missing, corrupt or foreign files with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise MRDError(f"Checkpoint not found: {path}. Run `{made_by}` first to create it.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # A damaged file fails anywhere in torch's zip reader or unpickler (RuntimeError,
        # OSError for a truncated archive, UnpicklingError, UnicodeDecodeError...); they all
        # mean the same thing to the user.
        raise MRDError(
            f"Checkpoint {path} is corrupt or not a PyTorch file ({type(exc).__name__}). "
            f"Delete it and run `{made_by}` again."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MRDError(
            f"{path} is not an mrd checkpoint (expected format {FORMAT}). Pass a checkpoint "
            f"written by `{made_by}`."
        )
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise MRDError(f"Checkpoint {path} lacks {', '.join(missing)}; run `{made_by}` again.")
    problem = spec_problem(ckpt["model_spec"])
    if problem or not isinstance(ckpt["state_dict"], dict):
        raise MRDError(
            f"Checkpoint {path} has a malformed model spec ({problem or 'its weights are not a mapping'}); "
            f"run `{made_by}` again."
        )
    problem = _metadata_problem(ckpt)
    if problem:
        raise MRDError(f"Checkpoint {path} is damaged: {problem}. Run `{made_by}` again.")
    bad = [
        name
        for name, t in ckpt["state_dict"].items()
        if not isinstance(t, torch.Tensor)
        or (t.is_floating_point() and not bool(torch.isfinite(t).all()))
    ]
    if bad:
        raise MRDError(
            f"Checkpoint {path} holds NaN or infinite weights (first: '{bad[0]}'); a model "
            f"with them predicts garbage. Delete it and run `{made_by}` again."
        )
    ckpt["path"] = str(path)
    return ckpt


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _metadata_problem(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with the fields read besides the weights (None when all are sound)."""
    checks: list[tuple[str, bool]] = [
        ("stage", ckpt["stage"] in ("pretrain", "distill")),
        ("role", ckpt["role"] in ("multi", "text")),
        (
            "label_names",
            isinstance(ckpt["label_names"], list)
            and len(ckpt["label_names"]) >= 1
            and all(isinstance(x, str) for x in ckpt["label_names"]),
        ),
        ("data_fingerprint", isinstance(ckpt["data_fingerprint"], str)),
        ("epoch", ckpt.get("epoch") is None or (_is_int(ckpt["epoch"]) and ckpt["epoch"] >= 0)),
        ("seed", ckpt.get("seed") is None or _is_int(ckpt["seed"])),
        ("config", ckpt.get("config") is None or isinstance(ckpt["config"], dict)),
        (
            "val_metrics",
            ckpt.get("val_metrics") is None
            or (
                isinstance(ckpt["val_metrics"], dict)
                and all(
                    isinstance(v, (int, float, list, dict)) and not isinstance(v, bool)
                    for v in ckpt["val_metrics"].values()
                )
                and isinstance(ckpt["val_metrics"].get("weighted_f1", 0.0), (int, float))
            ),
        ),
        (
            "partition_sha256",
            ckpt.get("partition_sha256") is None or isinstance(ckpt["partition_sha256"], str),
        ),
    ]
    bad = [name for name, ok in checks if not ok]
    return f"its field '{bad[0]}' is malformed" if bad else None


# Bounds of a model spec read from a file, checked before anything is built: wide enough
# for every model the config can ask for in practice, tight enough that a crafted file
# cannot make building spin (a billion layers) or allocate without end; the weights' own
# shapes are then compared on the meta device, still before any memory is taken.
SPEC_INT_BOUNDS = {
    "num_speakers": (1, 1_000_000),
    "num_classes": (1, 100_000),
    "hidden": (2, 1_000_000),
    "layers": (1, 1024),
    "heads": (1, 4096),
}
MAX_INPUT_DIM = 10_000_000
_MAX_OPTION_INT = 1_000_000
_MAX_OPTION_DEPTH = 4


def spec_problem(spec: Any) -> str | None:
    """What is wrong with a checkpoint's model spec (None when every field is in bounds)."""
    if not isinstance(spec, dict):
        return "it is not a mapping"
    try:
        built = ModelSpec(**spec)
    except TypeError as exc:
        return f"it does not describe a model ({exc})"
    if built.backbone not in BACKBONES:
        return f"its backbone {built.backbone!r} is unknown"
    for key, (low, high) in SPEC_INT_BOUNDS.items():
        value = getattr(built, key)
        if not _is_int(value) or not low <= value <= high:
            return f"its {key} {value!r} is not an integer in [{low}, {high}]"
    if not (isinstance(built.dropout, (int, float)) and 0 <= built.dropout < 1):
        return f"its dropout {built.dropout!r} is not a number in [0, 1)"
    if not isinstance(built.encoder, str):
        return "its encoder is not a name"
    dims = built.input_dims
    if not isinstance(dims, dict) or not dims:
        return "its input_dims are not a mapping of modality to dimension"
    for m, d in dims.items():
        if not isinstance(m, str) or not _is_int(d) or not 1 <= d <= MAX_INPUT_DIM:
            return f"its input dimension {m!r}: {d!r} is not an integer in [1, {MAX_INPUT_DIM}]"
    mods = built.modalities
    if not isinstance(mods, list) or not mods or len(set(map(str, mods))) != len(mods):
        return "its modalities are not a list of distinct names"
    if any(not isinstance(m, str) or m not in dims for m in mods):
        return "a modality of it has no input dimension"
    if not isinstance(built.options, dict):
        return "its options are not a mapping"
    return _option_problem(built.options, "options", 0)


def _option_problem(value: Any, where: str, depth: int) -> str | None:
    """Backbone options: plain values, finite numbers, small integers, shallow nesting."""
    if depth > _MAX_OPTION_DEPTH:
        return f"its {where} are nested too deeply"
    if isinstance(value, dict):
        if len(value) > 1000:
            return f"its {where} hold too many entries"
        for k, v in value.items():
            problem = _option_problem(v, f"{where}.{k}", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, list):
        if len(value) > 1000:
            return f"its {where} hold too many entries"
        for v in value:
            problem = _option_problem(v, where, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if _is_int(value):
        return None if abs(value) <= _MAX_OPTION_INT else f"its {where} {value} is too large"
    if isinstance(value, float):
        return None if math.isfinite(value) and abs(value) <= 1e9 else f"its {where} is {value}"
    return f"its {where} is a {type(value).__name__}"


def check_matches_corpus(ckpt: dict[str, Any], corpus: Corpus) -> None:
    """Refuse a checkpoint whose labels, dimensions or data differ from the loaded corpus."""
    path = ckpt.get("path", "checkpoint")
    spec = ckpt["model_spec"]
    if list(ckpt["label_names"]) != corpus.label_names:
        raise MRDError(
            f"{path} was trained with labels {ckpt['label_names']} but dataset "
            f"'{corpus.name}' has {corpus.label_names}. Use a checkpoint of this dataset."
        )
    dims = corpus.input_dims
    for m, d in spec["input_dims"].items():
        if m not in dims:
            raise MRDError(
                f"{path} needs modality '{m}', which the loaded data lacks; add it to "
                "dataset.modalities or use a checkpoint made without it."
            )
        if dims[m] != d:
            raise MRDError(
                f"{path} expects {m} features of dimension {d}, the data has {dims[m]}. "
                "The checkpoint was made from other feature files."
            )
    if spec["num_speakers"] != corpus.num_speakers:
        raise MRDError(
            f"{path} was built for {spec['num_speakers']} speakers, the data has "
            f"{corpus.num_speakers}. The checkpoint was made from other feature files."
        )
    if ckpt["data_fingerprint"] != corpus.fingerprint():
        raise MRDError(
            f"{path} was made from other data (fingerprint {ckpt['data_fingerprint']}, the data "
            f"loaded now is {corpus.fingerprint()}). Rerun `mrd pretrain` on this data, or "
            "point --data-dir / --config at the data it was made from."
        )


def _check_shapes(spec: ModelSpec, weights: dict[str, Any]) -> None:
    """The network ``spec`` builds, built on the meta device (no memory), must have exactly
    the weights' names and shapes: a spec claiming a far larger model than its weights is
    refused before the real one is allocated."""
    with torch.device("meta"):
        probe = build_backbone(spec)
    wanted = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
    if wanted != have:
        diff = sorted(set(wanted) ^ set(have)) or [k for k in wanted if wanted[k] != have[k]]
        raise ValueError(
            f"its weights differ from the network its spec describes (first: '{diff[0]}')"
        )


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device) -> Backbone:
    """Rebuild the network of a checkpoint (its spec names the backbone) on ``device``, in
    eval mode."""
    spec = ModelSpec(**ckpt["model_spec"])
    try:
        _check_shapes(spec, ckpt["state_dict"])
        model = build_backbone(spec)
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, ValueError, KeyError, NotImplementedError) as exc:
        raise MRDError(
            f"Checkpoint {ckpt.get('path')} does not fit its own model spec: {exc}"
        ) from None
    return model.to(device).eval()

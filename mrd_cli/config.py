"""Typed configuration: YAML file -> ``Config`` dataclasses -> the code that uses them.

A config has one section per pipeline step. The dataclasses below are the one source of
defaults; the built-in ``configs/<name>.yaml`` files set only what differs for their dataset.
``load_config`` starts from the defaults, applies the dataset's YAML (built in or a user's
file), then the user's ``--config`` overrides, then CLI options, and validates the result:
unknown keys are refused with the closest known key suggested, wrong types and out-of-range
values are refused.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from mrd_cli.errors import MRDError

BUILTIN_DATASETS = ("iemocap", "meld", "synthetic")
# The curriculum stages (partition groups at the curriculum's level), by name.
STAGES = ("difficult", "general", "simple")


@dataclass
class DatasetConfig:
    """Which corpus, in which community layout, from which files."""

    name: str = "synthetic"
    # Tuple layout of the feature files: "iemocap" (9-tuple + roberta 10-tuple),
    # "meld" (10-tuple + roberta 11-tuple) or "synthetic" (generated in memory).
    layout: Literal["iemocap", "meld", "synthetic"] = "synthetic"
    # File names, relative to --data-dir (default data/<name>) unless absolute.
    features_file: str = ""
    roberta_file: str = ""
    label_names: list[str] = field(default_factory=list)
    # "roberta": layer-normalised mean of roberta1..4 (the paper); "legacy": videoText.
    text_features: Literal["roberta", "legacy"] = "roberta"
    modalities: list[str] = field(default_factory=lambda: ["text", "audio", "visual"])
    # Share of training dialogues held out (seeded) for validation when the corpus has no
    # official validation split (IEMOCAP).
    val_fraction: float = 0.1
    # Size of the built-in synthetic corpus ("small" for quick runs; "iemocap"/"meld" for
    # full-size data with the real dimensions).
    synthetic_preset: Literal["small", "iemocap", "meld"] = "small"
    # Seed of the data itself (synthetic generation, IEMOCAP's validation dialogues). Kept
    # apart from the training seed so that every training seed sees the same split.
    data_seed: int = 0


@dataclass
class ModelConfig:
    """The speaker-aware dialogue network shared by the multimodal and the text model."""

    hidden: int = 128
    encoder: Literal["gru", "transformer"] = "gru"
    layers: int = 1
    heads: int = 4
    dropout: float = 0.5


@dataclass
class PretrainConfig:
    """Supervised pretraining of M_multi and M_text; the epoch is chosen on validation W-F1."""

    epochs: int = 40
    lr: float = 1e-4
    batch_size: int = 16
    # L2 penalty on the parameters, added to the loss (L_reg of Eq. 15).
    l2: float = 1e-5
    loss: Literal["ce", "weighted_ce", "focal"] = "weighted_ce"
    focal_gamma: float = 2.0
    # Early stopping: stop once validation W-F1 has not improved for this many epochs,
    # counted within the second half of the schedule only (an early collapse is not a
    # plateau); 0 = off. The chosen epoch is still the best on validation. Also used by
    # the cross-fitted partition's fold models.
    patience: int = 10


@dataclass
class PartitionConfig:
    """How training utterances are split into difficult / general / simple (Eq. 9-13)."""

    # "cross_fit": out-of-fold predictions of fold models (honest); "in_sample": predictions
    # of the pretrained checkpoints on the data they were trained on.
    method: Literal["cross_fit", "in_sample"] = "cross_fit"
    folds: int = 5
    # Train the folds' models of a role together, as one batched computation (one-layer GRU
    # models; each equals its model trained alone up to floating-point rounding). False:
    # one after another.
    stacked: bool = True


@dataclass
class DistillConfig:
    """MRD: mutual distillation (MIC), refactoring (ILC), reverse curriculum (RCL)."""

    epochs: int = 30
    lr: float = 5e-5
    batch_size: int = 16
    alpha: float = 0.5  # weight of L_dm (kd_m), text -> multimodal (Eq. 5)
    beta: float = 0.5  # weight of L_dt (kd_t), multimodal -> text (Eq. 5)
    gamma: float = 0.5  # weight of L_rm (ref_m), multimodal refactoring (Eq. 8)
    delta: float = 0.5  # weight of L_rt (ref_t), text refactoring (Eq. 8)
    temperature: float = 2.0
    # Multiply the distillation terms by T^2 (Hinton); off in the paper.
    t2_scaling: bool = False
    l2: float = 1e-5
    loss: Literal["ce", "weighted_ce", "focal"] = "weighted_ce"
    focal_gamma: float = 2.0
    # Order of the curriculum stages: reverse = difficult, general, simple (Eq. 14);
    # forward = simple, general, difficult; none = every utterance in every epoch.
    curriculum: Literal["reverse", "forward", "none"] = "reverse"
    # Share of the distillation epochs given to each stage, keyed by stage name (so the
    # meaning does not depend on the curriculum order); normalised to sum 1.
    stage_fractions: dict[str, float] = field(
        default_factory=lambda: {"difficult": 0.3, "general": 0.3, "simple": 0.4}
    )
    # True: a stage adds its group to the earlier ones (the last stage sees all data).
    # False: a stage trains on its own group only.
    cumulative: bool = True
    # Early stopping (0 = off): stop once neither model's validation W-F1 has improved for
    # this many epochs, counted only within the last curriculum stage, so that no stage is
    # ever cut short (the earliest stop is this many epochs into the last stage).
    patience: int = 5


@dataclass
class AblateConfig:
    """The ablation study: MRD and its variants over several seeds."""

    seeds: int = 5
    # True: each seed pretrains (and partitions) anew; False: one pretrained pair and one
    # partition are reused by every seed, only distillation is repeated.
    repretrain: bool = False
    # Paired bootstrap resamples over test utterances for the significance column.
    bootstrap: int = 1000


@dataclass
class Config:
    """The effective configuration of one run; saved as ``RUN/config.yaml``."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    ablate: AblateConfig = field(default_factory=AblateConfig)
    seed: int = 0
    # torch's intra-op CPU threads for training commands (torch.set_num_threads); 0 = torch's
    # default, one per core. 1 by default: the GRU's small operations gain only 10-15% from
    # a second thread on an idle machine and lose several times that when another process
    # holds a core (README, "Performance").
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------
# Building and validating


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check ``value`` against a field annotation; return (ok, possibly coerced value)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return value in typing.get_args(annotation), value
    if origin in (list, typing.List):  # noqa: UP006
        (inner,) = typing.get_args(annotation)
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, item = _type_ok(item, inner)
            if not ok:
                return False, value
            out.append(item)
        return True, out
    if origin in (dict, typing.Dict):  # noqa: UP006
        key_type, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            return False, value
        mapped = {}
        for k, item in value.items():
            ok_key, k = _type_ok(k, key_type)
            ok, item = _type_ok(item, value_type)
            if not (ok_key and ok):
                return False, value
            mapped[k] = item
        return True, mapped
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            ok, coerced = _type_ok(value, arg)
            if ok:
                return True, coerced
        return False, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    return True, value


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (list, typing.List):  # noqa: UP006
        return f"a list of {_describe(typing.get_args(annotation)[0])}"
    if origin in (dict, typing.Dict):  # noqa: UP006
        key_type, value_type = typing.get_args(annotation)
        return f"a mapping of {_describe(key_type)} to {_describe(value_type)}"
    return getattr(annotation, "__name__", str(annotation))


def _apply(obj: Any, overrides: dict[str, Any], where: str) -> None:
    """Apply a (nested) dict of overrides onto a config dataclass, validating as it goes."""
    if not isinstance(overrides, dict):
        raise MRDError(f"Config section '{where or 'top level'}' must be a mapping.")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise MRDError(
                f"Unknown config key '{path}'.{hint} Known keys here: {', '.join(names)}."
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, path)
            continue
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise MRDError(f"Config key '{path}' must be {_describe(hints[key])}, got {value!r}.")
        numbers = (
            list(coerced.values())
            if isinstance(coerced, dict)
            else coerced
            if isinstance(coerced, list)
            else [coerced]
        )
        if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
            raise MRDError(f"Config key '{path}' must be a finite number, got {value!r}.")
        setattr(obj, key, coerced)


def validate(cfg: Config) -> Config:
    """Refuse out-of-range values with a message naming the key."""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise MRDError(f"Config key '{key}' {msg}, got {_get(cfg, key)!r}.")

    for section in ("pretrain", "distill"):
        need(_get(cfg, f"{section}.epochs") >= 1, f"{section}.epochs", "must be >= 1")
        need(_get(cfg, f"{section}.lr") > 0, f"{section}.lr", "must be > 0")
        need(_get(cfg, f"{section}.batch_size") >= 1, f"{section}.batch_size", "must be >= 1")
        need(_get(cfg, f"{section}.l2") >= 0, f"{section}.l2", "must be >= 0")
        need(_get(cfg, f"{section}.focal_gamma") >= 0, f"{section}.focal_gamma", "must be >= 0")
        need(_get(cfg, f"{section}.patience") >= 0, f"{section}.patience", "must be >= 0 (0 = off)")
    for key in ("alpha", "beta", "gamma", "delta"):
        need(getattr(cfg.distill, key) >= 0, f"distill.{key}", "must be >= 0 (a weight)")
    need(cfg.distill.temperature > 0, "distill.temperature", "must be > 0")
    fr = cfg.distill.stage_fractions
    need(
        set(fr) == set(STAGES),
        "distill.stage_fractions",
        f"must give a fraction for each stage, {', '.join(STAGES)}, and nothing else",
    )
    need(
        all(f >= 0 for f in fr.values()) and sum(fr.values()) > 0,
        "distill.stage_fractions",
        "must hold non-negative numbers with a positive sum",
    )
    need(cfg.threads >= 0, "threads", "must be >= 0 (0 = one per core)")
    need(cfg.partition.folds >= 2, "partition.folds", "must be >= 2")
    need(cfg.ablate.seeds >= 1, "ablate.seeds", "must be >= 1")
    need(cfg.ablate.bootstrap >= 0, "ablate.bootstrap", "must be >= 0")
    need(cfg.model.hidden >= 2, "model.hidden", "must be >= 2")
    need(cfg.model.layers >= 1, "model.layers", "must be >= 1")
    need(cfg.model.heads >= 1, "model.heads", "must be >= 1")
    need(0 <= cfg.model.dropout < 1, "model.dropout", "must be in [0, 1)")
    need(0 < cfg.dataset.val_fraction < 1, "dataset.val_fraction", "must be in (0, 1)")
    need(len(cfg.dataset.modalities) >= 1, "dataset.modalities", "must name a modality")
    unknown = set(cfg.dataset.modalities) - {"text", "audio", "visual"}
    need(not unknown, "dataset.modalities", "may contain only 'text', 'audio', 'visual'")
    need("text" in cfg.dataset.modalities, "dataset.modalities", "must contain 'text'")
    return cfg


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a clear MRDError."""
    if not path.is_file():
        raise MRDError(
            f"Config file not found: {path}. Check the path given to --config or --dataset."
        )
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MRDError(f"Config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MRDError(f"Config file {path} must contain a mapping at the top level.")
    return data


def builtin_config_path(name: str) -> Path:
    """Path of a built-in config (configs/<name>.yaml).

    In a source checkout (editable install) that is the repository's ``configs/``; a wheel
    ships the same files as the package ``mrd_cli.configs``.
    """
    checkout = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("mrd_cli.configs").joinpath(f"{name}.yaml")))


def load_config(
    dataset: str,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Config, Path | None]:
    """Resolve ``--dataset`` (a built-in name or a YAML path) and ``--config`` into a Config.

    Returns the config and, for a dataset defined by a YAML file, that file's directory
    (relative file names in it are resolved against it).
    """
    cfg = Config()
    yaml_dir: Path | None = None
    if dataset in BUILTIN_DATASETS:
        _apply(cfg, read_yaml(builtin_config_path(dataset)), "")
    elif dataset.endswith((".yaml", ".yml")) or Path(dataset).is_file():
        path = Path(dataset)
        _apply(cfg, read_yaml(path), "")
        yaml_dir = path.resolve().parent
        if cfg.dataset.layout == "synthetic" and cfg.dataset.name == "synthetic":
            raise MRDError(
                f"Dataset file {path} must define 'dataset.name' and 'dataset.layout' "
                "(iemocap or meld)."
            )
    else:
        close = difflib.get_close_matches(dataset, BUILTIN_DATASETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise MRDError(
            f"Unknown dataset '{dataset}'.{hint} Use one of {', '.join(BUILTIN_DATASETS)} "
            "or the path to a dataset YAML file."
        )
    if config_file is not None:
        _apply(cfg, read_yaml(config_file), "")
    if overrides:
        _apply(cfg, overrides, "")
    return validate(cfg), yaml_dir

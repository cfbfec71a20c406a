"""Typed configuration: YAML file -> ``Config`` dataclasses -> the code that uses them.

A config has one section per pipeline step (``config/sections.py``): the dataclasses there
are the one source of defaults and of what each key may hold, each field declared with its
rules beside it. The built-in ``configs/<name>.yaml`` files set only what differs for their
dataset. ``load_config`` starts from the defaults, applies the dataset's YAML (built in or
a user's file), then the user's ``--config`` overrides, then CLI options, and checks the
result with the one validator (``config/schema.py``'s ``check``): unknown keys are refused
with the closest known key suggested, wrong types and out-of-range values are refused,
each naming its dotted key.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

from mrd_cli.config.schema import (
    apply,
    check,
    describe_type,
    key_type,
    load_yaml_text,
    nested_overrides,
    read_yaml,
    value_fits,
    with_values,
)
from mrd_cli.config.sections import (
    BUILTIN_DATASETS,
    STAGES,
    AblateConfig,
    Config,
    DatasetConfig,
    DistillConfig,
    DualConfig,
    ExecutorConfig,
    FoalConfig,
    M3NetConfig,
    ModelConfig,
    PartitionConfig,
    PretrainConfig,
    SelftrainConfig,
    SemiConfig,
    TrackingConfig,
)
from mrd_cli.errors import MRDError
from mrd_cli.labels import check_label_names

__all__ = [
    "BUILTIN_DATASETS",
    "STAGES",
    "AblateConfig",
    "Config",
    "DatasetConfig",
    "DistillConfig",
    "DualConfig",
    "ExecutorConfig",
    "FoalConfig",
    "M3NetConfig",
    "ModelConfig",
    "PartitionConfig",
    "PretrainConfig",
    "SelftrainConfig",
    "TrackingConfig",
    "SemiConfig",
    "builtin_config_path",
    "config_files",
    "describe_type",
    "key_type",
    "load_config",
    "load_yaml_text",
    "model_in_use",
    "nested_overrides",
    "read_yaml",
    "validate",
    "value_fits",
    "with_values",
]

validate = check  # ``cfg`` if every key holds its rules; else an MRDError naming the key


# The sections of ``model`` that belong to one backbone each.
BACKBONE_SECTIONS = ("foal", "dual", "semi", "m3net")


def model_in_use(model: Any) -> Any:
    """``model`` (a config's ``model`` section as a dict) without the settings of the
    backbones it does not use: what a pretrained network actually depends on, so that a
    change to ``model.foal`` leaves a dialogue network's checkpoints current. Anything
    that is not such a dict is returned as it is."""
    if not isinstance(model, dict):
        return model
    used = (model.get("backbone"), model.get("text_backbone", "dialogue"))
    return {k: v for k, v in model.items() if k not in BACKBONE_SECTIONS or k in used}


def builtin_config_path(name: str) -> Path:
    """Path of a built-in config (configs/<name>.yaml).

    In a source checkout (editable install) that is the repository's ``configs/``; a wheel
    ships the same files as the package ``mrd_cli.configs``.
    """
    checkout = Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("mrd_cli.configs").joinpath(f"{name}.yaml")))


def _check_dataset_file(path: Path, doc: dict[str, Any]) -> None:
    """A dataset YAML must say which corpus it is and in which layout; nothing falls back to
    the built-in synthetic corpus silently."""
    section = doc.get("dataset")
    if not isinstance(section, dict):
        raise MRDError(
            f"Dataset file {path} must have a 'dataset' section with at least 'name' and "
            "'layout' (iemocap, meld or synthetic)."
        )
    missing = [k for k in ("name", "layout") if k not in section]
    if missing:
        raise MRDError(
            f"Dataset file {path} lacks {' and '.join(f'dataset.{k}' for k in missing)}; "
            "give the corpus a name and its layout (iemocap, meld or synthetic)."
        )


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
        apply(cfg, read_yaml(builtin_config_path(dataset)), "")
    elif dataset.endswith((".yaml", ".yml")) or Path(dataset).is_file():
        path = Path(dataset)
        doc = read_yaml(path)
        _check_dataset_file(path, doc)
        apply(cfg, doc, "")
        yaml_dir = path.resolve().parent
    else:
        close = difflib.get_close_matches(dataset, BUILTIN_DATASETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise MRDError(
            f"Unknown dataset '{dataset}'.{hint} Use one of {', '.join(BUILTIN_DATASETS)} "
            "or the path to a dataset YAML file."
        )
    if config_file is not None:
        apply(cfg, read_yaml(config_file), "")
    if overrides:
        apply(cfg, overrides, "")
    names = cfg.dataset.label_names
    if all(isinstance(n, str) for n in names):
        # The one label normalisation (mrd_cli/labels.py): display forms, refused with
        # the code point named when a name holds an invisible character.
        cfg.dataset.label_names = check_label_names(names, "dataset.label_names")
    return validate(cfg), yaml_dir


def config_files(dataset: str, config_file: Path | None = None) -> list[Path]:
    """The files ``load_config`` merges over the defaults of this package, in order."""
    files: list[Path] = []
    if dataset in BUILTIN_DATASETS:
        files.append(builtin_config_path(dataset))
    elif dataset.endswith((".yaml", ".yml")) or Path(dataset).is_file():
        files.append(Path(dataset))
    if config_file is not None:
        files.append(Path(config_file))
    return files

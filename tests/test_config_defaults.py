"""Defaults live in one place (the config dataclasses); the built-in YAML files carry only
what differs, and the effective config of each built-in dataset is pinned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrd_cli.config import BUILTIN_DATASETS, Config, builtin_config_path, load_config, read_yaml

PINNED = Path(__file__).parent / "data" / "effective_configs.json"


def _repeats(yaml_part: dict, defaults: dict, where: str) -> list[str]:
    out = []
    for key, value in yaml_part.items():
        path = f"{where}.{key}" if where else key
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict) and key != "stage_fractions":
            out += _repeats(value, default, path)
        elif value == default:
            out.append(path)
    return out


@pytest.mark.parametrize("dataset", BUILTIN_DATASETS)
def test_builtin_yaml_sets_only_what_differs_from_the_defaults(dataset):
    repeated = _repeats(read_yaml(builtin_config_path(dataset)), Config().to_dict(), "")
    assert not repeated, f"configs/{dataset}.yaml repeats defaults: {repeated}"


@pytest.mark.parametrize("dataset", BUILTIN_DATASETS)
def test_effective_config_of_builtin_dataset_is_pinned(dataset):
    # A change here changes results: update tests/data/effective_configs.json on purpose.
    pinned = json.loads(PINNED.read_text())[dataset]
    assert load_config(dataset)[0].to_dict() == pinned


def test_stage_fractions_are_keyed_by_stage_name():
    from mrd_cli.errors import MRDError

    cfg, _ = load_config(
        "synthetic",
        overrides={
            "distill": {"stage_fractions": {"difficult": 0.2, "general": 0.2, "simple": 0.6}}
        },
    )
    assert cfg.distill.stage_fractions == {"difficult": 0.2, "general": 0.2, "simple": 0.6}
    with pytest.raises(MRDError, match="stage_fractions"):
        load_config("synthetic", overrides={"distill": {"stage_fractions": {"simple": 1.0}}})
    with pytest.raises(MRDError, match="stage_fractions"):
        load_config("synthetic", overrides={"distill": {"stage_fractions": [0.3, 0.3, 0.4]}})

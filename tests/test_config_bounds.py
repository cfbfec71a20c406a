"""Every size in the config has a sane upper bound, and every rule is declared beside its key.

A typo such as ``threads: 100000`` (or ``model.hidden: 1000000``) must be refused when the
config is read, naming the key, rather than die later in the OpenMP runtime or the
allocator. The structural test below walks every int field of ``Config``, so a key added
later without a bound fails here.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.config import Config, load_config, with_values
from mrd_cli.config.schema import check, problem
from mrd_cli.errors import MRDError

runner = CliRunner()


def _int_keys(obj: Any, where: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        path = f"{where}.{f.name}" if where else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += _int_keys(value, path)
        elif hints[f.name] is int:
            out.append(path)
    return out


INT_KEYS = _int_keys(Config())


def test_the_walk_finds_the_sizes() -> None:
    for key in ("threads", "model.hidden", "model.layers", "model.heads", "partition.folds"):
        assert key in INT_KEYS


@pytest.mark.parametrize("key", INT_KEYS)
def test_every_int_key_has_an_upper_bound(key: str) -> None:
    with pytest.raises(MRDError, match=rf"Config key '{key}' must be"):
        with_values(Config(), {key: 10**12})


# (key, largest value accepted): the bound is part of the contract, shown in the message.
BOUNDS = [
    ("threads", 1024),
    ("model.hidden", 8192),
    ("model.layers", 64),
    ("model.heads", 256),
    ("model.foal.layers", 64),
    ("pretrain.epochs", 100_000),
    ("pretrain.batch_size", 65_536),
    ("distill.epochs", 100_000),
    ("distill.batch_size", 65_536),
    ("partition.folds", 100),
    ("ablate.seeds", 1000),
    ("ablate.bootstrap", 1_000_000),
    ("selftrain.epochs", 100_000),
    ("selftrain.rounds", 1000),
    ("selftrain.noise_steps", 100_000),
]


@pytest.mark.parametrize("key, bound", BOUNDS, ids=[k for k, _ in BOUNDS])
def test_a_size_at_its_bound_is_kept_and_one_above_is_refused(key: str, bound: int) -> None:
    # heads must divide hidden only for attention; the default GRU network has none.
    assert problem(with_values(Config(), {key: bound})) is None
    with pytest.raises(MRDError, match=rf"'{key}' must be <= {bound}, got {bound + 1}"):
        with_values(Config(), {key: bound + 1})


@pytest.mark.parametrize(
    "key, value", [("executor.cpus_per_task", 4096.0), ("executor.gpus_per_task", 65.0)]
)
def test_the_resources_of_a_unit_are_bounded(key: str, value: float) -> None:
    with pytest.raises(MRDError, match=rf"'{key}' must be <="):
        with_values(Config(), {key: value})


def test_too_many_class_names_are_refused() -> None:
    names = [f"c{i}" for i in range(1001)]
    with pytest.raises(MRDError, match="'dataset.label_names' may name at most 1000 classes"):
        load_config("synthetic", overrides={"dataset": {"label_names": names}})


def test_cross_checks_name_their_key_with_its_section() -> None:
    with pytest.raises(MRDError, match=r"'model.hidden' must be a multiple of model.heads \(4\)"):
        load_config("synthetic", overrides={"model": {"backbone": "dual", "hidden": 10}})
    with pytest.raises(MRDError, match="'selftrain.beta_end' must satisfy"):
        load_config("synthetic", overrides={"selftrain": {"beta_start": 0.5, "beta_end": 0.1}})


def test_a_config_built_in_code_is_checked_by_the_same_validator() -> None:
    cfg = Config()
    cfg.model.layers = 0
    with pytest.raises(MRDError, match="'model.layers' must be >= 1, got 0"):
        check(cfg)


@pytest.mark.parametrize(
    "body, needle",
    [
        ("threads: 100000\n", "'threads' must be <= 1024"),
        ("model:\n  hidden: 1000000\n", "'model.hidden' must be <= 8192"),
        ("partition:\n  folds: 100000\n", "'partition.folds' must be <= 100"),
    ],
    ids=["threads", "hidden", "folds"],
)
def test_an_unbounded_size_in_a_config_file_is_one_error_line(
    tmp_path: Path, body: str, needle: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(body)
    res = runner.invoke(app, ["pretrain", "--config", str(cfg), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and needle in errors[0], res.stderr
    assert not (tmp_path / "r").exists()

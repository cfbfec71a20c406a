"""Property: whatever a dataset YAML or a config YAML holds (random keys, types, nesting,
duplicate keys, broken YAML), ``mrd`` either runs (exit 0) or refuses with exit 2 and one
line on stderr, never a traceback.

The fast test loads the documents as every command does (``mrd data inspect``: config,
dataset keys, files, the corpus); the slow one also pretrains one epoch with them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mrd_cli.cli.app import app

runner = CliRunner()

# Printable text (control characters make the file invalid YAML, a case the garbage lines cover).
_text = st.text(st.characters(categories=["L", "N", "P", "Zs"]), max_size=6)
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(1e-5, 1.0),
    _text,
)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=6,
)


def _section(
    known: dict[str, st.SearchStrategy], required: tuple[str, ...] = ()
) -> st.SearchStrategy:
    """Mostly a mapping of some known keys with plausible values; sometimes a value of any
    type, a random key, or not a mapping at all (so that valid and invalid documents both
    come up often)."""

    def value(v: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(v, v, v, v, _value)

    keyed = st.fixed_dictionaries(
        {k: value(known[k]) for k in required},
        optional={k: value(v) for k, v in known.items() if k not in required},
    )
    extra = st.dictionaries(_text.filter(bool), _value, min_size=1, max_size=1)
    return st.one_of(keyed, keyed, keyed, st.builds(lambda a, b: {**a, **b}, keyed, extra), _value)


_DATASET = {
    "name": st.sampled_from(["mine", "ok_1", "mine", "../escape", "", "a/b", "x" * 200]),
    "layout": st.sampled_from(["synthetic", "synthetic", "iemocap", "meld", "other"]),
    "synthetic_preset": st.sampled_from(["small", "huge"]),
    "features_file": st.sampled_from(["", "missing.pkl", "/nonexistent/f.pkl"]),
    "label_names": st.lists(st.sampled_from(["a", "b", "c", "hap"]), max_size=8),
    "text_features": st.sampled_from(["roberta", "legacy", "bert"]),
    "modalities": st.lists(st.sampled_from(["text", "audio", "visual", "smell"]), max_size=4),
    "val_fraction": st.floats(-0.5, 1.5),
    "data_seed": st.integers(-2, 2**33),
}
_MODEL = {
    "hidden": st.integers(-1, 12),
    "encoder": st.sampled_from(["gru", "transformer", "lstm"]),
    "layers": st.integers(0, 2),
    "heads": st.integers(0, 4),
    "dropout": st.floats(-0.5, 1.5),
}
_TRAIN = {
    "lr": st.floats(-1, 0.05),
    "batch_size": st.integers(-1, 256),
    "l2": st.floats(-1, 1e-3),
    "loss": st.sampled_from(["ce", "weighted_ce", "focal", "hinge"]),
    "focal_gamma": st.floats(-1, 3),
}


def _document(dataset_required: bool) -> st.SearchStrategy[dict[str, Any]]:
    sections = {
        "model": _section(_MODEL),
        "pretrain": _section(_TRAIN),
        "partition": _section({"method": st.sampled_from(["in_sample", "cross_fit", "x"])}),
        "distill": _section({**_TRAIN, "temperature": st.floats(-1, 5)}),
        "seed": st.integers(-1, 2**40),
    }
    complete = _section(_DATASET, ("name", "layout"))
    dataset = st.one_of(complete, complete, complete, _section(_DATASET))
    if dataset_required:
        return st.fixed_dictionaries({"dataset": dataset}, optional=sections)
    return st.fixed_dictionaries({}, optional={"dataset": dataset, **sections})


def _render(doc: Any, duplicate: int, garbage: str) -> str:
    """YAML text of ``doc``, with one of its lines repeated (a duplicate key or section) or
    some random text appended, when asked."""
    text = yaml.safe_dump(doc, sort_keys=False)
    lines = text.splitlines()
    if duplicate and lines:
        line = lines[duplicate % len(lines)]
        lines.insert(duplicate % len(lines), line)
    if garbage:
        lines.append(garbage)
    return "\n".join(lines) + "\n"


# (line to repeat, text to append): mostly neither, sometimes one of them.
_texts = st.one_of(
    st.just((0, "")),
    st.just((0, "")),
    st.tuples(st.integers(1, 30), st.just("")),
    st.tuples(st.just(0), st.text(max_size=12)),
)


def _check(args: list[str]) -> None:
    res = runner.invoke(app, args)
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code in (0, 2), res.output
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dataset=_document(dataset_required=True),
    config=_document(dataset_required=False),
    dataset_text=_texts,
    config_text=_texts,
)
def test_any_dataset_and_config_yaml_loads_or_is_refused_in_one_line(
    dataset: dict[str, Any],
    config: dict[str, Any],
    dataset_text: tuple[int, str],
    config_text: tuple[int, str],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "ds.yaml"
        cfg = Path(tmp) / "cfg.yaml"
        ds.write_text(_render(dataset, *dataset_text))
        cfg.write_text(_render(config, *config_text))
        _check(["data", "inspect", "--dataset", str(ds), "--config", str(cfg)])


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=_document(dataset_required=False), config_text=_texts)
def test_any_config_yaml_trains_or_is_refused_in_one_line(
    config: dict[str, Any], config_text: tuple[int, str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "cfg.yaml"
        cfg.write_text(_render(config, *config_text))
        _check(
            [
                "pretrain",
                "--config",
                str(cfg),
                "--run-dir",
                str(Path(tmp) / "run"),
                "--device",
                "cpu",
                "--epochs",
                "1",
            ]
        )

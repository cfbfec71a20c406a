"""The options the commands share, declared once, and the ``command`` decorator that adds them.

A command names the groups of shared options it takes (``@command("session", "training")``)
and receives them as one ``RunOptions`` (its first parameter, ``opts``); its own options
stay in its signature. Every option that stands for a config key says so in ``keys``, and
trailing ``KEY=VALUE`` arguments set any other key (``mrd distill distill.alpha=0.5``): all
of them reach the config as dotted-key overrides (``RunOptions.values``), checked against
the config's keys when the session opens (an unknown key is refused with the closest known
key suggested).

This module imports no torch: ``mrd --help`` builds every command from it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mrd_cli.cli.common import handle_errors
from mrd_cli.errors import MRDError


def config_default(key: str) -> str:
    """The default of the dotted config ``key`` as help text: the built-in default and where a
    built-in dataset config differs (``40; iemocap 60, synthetic 25``)."""
    from mrd_cli.cli.defaults import builtin_values

    values = builtin_values(key)
    default = values.pop("")
    other = ", ".join(f"{name} {value}" for name, value in values.items() if value != default)
    return f"config {key}: {default}" + (f"; {other}" if other else "")


# ---------------------------------------------------------------------------------------
# Shared option types (also used on their own by commands that take only a few of them)

DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="Dataset: iemocap, meld, synthetic, or the path to a dataset YAML file.",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML file whose keys override the dataset's config."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Directory holding the dataset's feature files (default: data/<dataset>).",
    ),
]
RunDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--run-dir", help="Run directory for checkpoints and results (default: runs/<dataset>)."
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="KEY=VALUE",
        help="Config overrides with dotted keys, applied after --config, e.g. "
        "distill.alpha=0.5 model.hidden=256 (values are read as YAML; an unknown key is "
        "refused with the closest known key suggested). The keys are those of the config "
        "files under configs/ and of mrd_cli/config.py.",
        show_default=False,
    ),
]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help=f"Random seed ({config_default('seed')}).")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=0,
        help=f"CPU threads for torch ({config_default('threads')}; 0 = one per core). One "
        "thread is safest on a shared machine: a second gains 10-15% when the cores are free "
        "and can cost several times that when another process holds one.",
    ),
]
NoEarlyStopOpt = Annotated[
    bool,
    typer.Option(
        "--no-early-stop",
        help="Train every configured epoch (sets pretrain.patience and distill.patience to 0).",
    ),
]


class ExecutorKind(str, Enum):
    local = "local"
    processes = "processes"
    ray = "ray"


ExecutorOpt = Annotated[
    ExecutorKind,
    typer.Option(
        "--executor",
        help="Where the independent units (cells, fold models) run: local (one after another "
        "here), processes (worker processes on this machine, executor.cpus_per_task cores "
        "each) or ray (Ray tasks; the ray extra). Same results either way; see "
        "docs/executors.md.",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="With --executor ray: a Ray cluster's address (HOST:6379), or auto for the one "
        "`ray start` made here. Default: start a Ray runtime on this machine for this command.",
    ),
]
PlotsOpt = Annotated[
    bool,
    typer.Option(
        "--plots",
        help="Also draw the run directory's figures (as `mrd plot` does) into RUN/plots/; "
        "needs the plots extra (matplotlib).",
    ),
]


class LoggerKind(str, Enum):
    tensorboard = "tensorboard"
    mlflow = "mlflow"


LogOpt = Annotated[
    list[LoggerKind] | None,
    typer.Option(
        "--log",
        help="Also log every epoch to TensorBoard (RUN/tensorboard/) or MLflow (a SQLite store "
        "RUN/mlflow.db, or config tracking.mlflow_uri); repeatable; sets tracking.loggers. "
        "Per-epoch metrics go to RUN/<step>/<role>.metrics.jsonl in any case. Needs the "
        "tensorboard / mlflow extra.",
    ),
]
ProtocolGapOpt = Annotated[
    bool,
    typer.Option(
        "--protocol-gap",
        help="DIAGNOSTIC: also score every model on the test split after each training "
        "epoch, kept apart from everything that selects, and report beside each honest "
        "figure (epoch chosen on validation) what keeping the best TEST epoch, as the public "
        "M3Net/CMERC/MRD scripts do, would have reported. Checkpoints and honest figures are "
        "the same with or without it. See docs/protocol-gap.md.",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one machine-readable JSON object on stdout only.")
]
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Show the full traceback when something goes wrong.")
]


def epochs_option(key: str) -> Any:
    """``--epochs`` for the config key ``key`` (pretrain.epochs, distill.epochs, ...)."""
    return Annotated[
        int | None,
        typer.Option("--epochs", help=f"Training epochs ({config_default(key)})."),
    ]


def backbone_option() -> Any:
    """``--backbone``: M_multi's network (the backbones are described once, in
    docs/backbones.md)."""
    return Annotated[
        str | None,
        typer.Option(
            "--backbone",
            help="M_multi's network: dialogue, foal (Foal-Net), dual (DUAL), semi "
            f"(MER2024-SEMI) or m3net (M3Net) ({config_default('model.backbone')}). M_text's "
            "is --text-backbone. What each one is: docs/backbones.md.",
        ),
    ]


BackboneOpt = backbone_option()
TextBackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--text-backbone",
        help="M_text's network, on the text alone: dialogue or m3net "
        f"({config_default('model.text_backbone')}). See docs/backbones.md.",
    ),
]
BACKBONE_KEYS = {"backbone": "model.backbone", "text_backbone": "model.text_backbone"}

# ---------------------------------------------------------------------------------------
# The groups of shared options and the config keys they stand for


@dataclass
class RunOptions:
    """The shared options of one command: where the data, config and run directory are,
    the device, the output mode, and ``values``, the config keys the command line sets
    (dotted key -> value), from options and ``KEY=VALUE`` arguments alike."""

    dataset: str = "synthetic"
    config: Path | None = None
    data_dir: Path | None = None
    run_dir: Path | None = None
    device: str = "auto"
    executor: ExecutorKind = ExecutorKind.local
    address: str | None = None
    plots: bool = False
    protocol_gap: bool = False
    json_out: bool = False
    debug: bool = False
    values: dict[str, Any] = field(default_factory=dict)


def _no_early_stop(on: bool) -> dict[str, Any]:
    return {"pretrain.patience": 0, "distill.patience": 0} if on else {}


def _loggers(log: list[LoggerKind]) -> dict[str, Any]:
    """``--log`` (none given: the config's loggers)."""
    return {"tracking.loggers": sorted({x.value for x in log})} if log else {}


# name -> (its type, its default)
_SHARED: dict[str, tuple[Any, Any]] = {
    "dataset": (DatasetOpt, "synthetic"),
    "config": (ConfigOpt, None),
    "data_dir": (DataDirOpt, None),
    "run_dir": (RunDirOpt, None),
    "device": (DeviceOpt, "auto"),
    "seed": (SeedOpt, None),
    "threads": (ThreadsOpt, None),
    "no_early_stop": (NoEarlyStopOpt, False),
    "executor": (ExecutorOpt, ExecutorKind.local),
    "address": (AddressOpt, None),
    "plots": (PlotsOpt, False),
    "protocol_gap": (ProtocolGapOpt, False),
    "log": (LogOpt, None),
    "overrides": (OverridesArg, None),
    "json_out": (JsonOpt, False),
    "debug": (DebugOpt, False),
}
GROUPS: dict[str, tuple[str, ...]] = {
    "session": ("dataset", "config", "data_dir", "run_dir", "device", "overrides"),
    "data": ("dataset", "config", "data_dir", "overrides"),
    "seed": ("seed",),
    "threads": ("threads",),
    "training": ("seed", "threads", "no_early_stop"),
    "executor": ("executor", "address"),
    "plots": ("plots",),
    "protocol_gap": ("protocol_gap",),
    "log": ("log",),
    # Where the data and the run are, without KEY=VALUE (`mrd predict`'s arguments are files).
    "paths": ("dataset", "config", "data_dir", "run_dir", "device"),
}
# Shared options that set config keys: dotted key, or a function of the value -> values.
_SHARED_KEYS: dict[str, str | Callable[[Any], dict[str, Any]]] = {
    "seed": "seed",
    "threads": "threads",
    "no_early_stop": _no_early_stop,
    "log": _loggers,
}
_OPTIONS_FIELDS = set(RunOptions.__dataclass_fields__) - {"values"}

Keys = Mapping[str, "str | Callable[[Any], dict[str, Any]]"]


def command(*groups: str, keys: Keys | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Give a command the shared options of ``groups`` (``--json`` and ``--debug`` always)
    as one ``RunOptions``, its first parameter. ``keys`` maps the command's own options to
    the config key each sets (or to a function of the option's value returning dotted
    values); an option left at None sets nothing. Project errors become one ``Error:`` line
    (``handle_errors``)."""
    names = [n for g in groups for n in GROUPS[g]]
    names = list(dict.fromkeys([*names, "json_out", "debug"]))
    own_keys = dict(keys or {})

    def decorate(func: Callable[..., Any]) -> Any:
        sig = inspect.signature(func)
        own = [
            p.replace(annotation=_evaluated(p.annotation, func))
            for name, p in sig.parameters.items()
            if name != "opts"
        ]
        shared = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=t, default=d)
            for n in names
            for t, d in [_SHARED[n]]
        ]
        first = [p for p in shared if p.name == "dataset"]
        params = [
            *first,
            *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own),
            *(p for p in shared if p.name != "dataset"),
        ]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in names}
            values = _collect(
                [(n, given[n], _SHARED_KEYS[n]) for n in names if n in _SHARED_KEYS]
                + [(n, kwargs[n], k) for n, k in own_keys.items()],
                given.get("overrides") or [],
            )
            opts = RunOptions(
                **{n: v for n, v in given.items() if n in _OPTIONS_FIELDS}, values=values
            )
            return func(opts, **kwargs)

        del wrapper.__wrapped__  # Typer reads the signature below, not func's
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return handle_errors(wrapper)

    return decorate


def _evaluated(annotation: Any, func: Callable[..., Any]) -> Any:
    """A parameter's annotation as an object (a string one, under ``from __future__ import
    annotations``, is evaluated in the function's module)."""
    if isinstance(annotation, str):
        return eval(annotation, func.__globals__)  # noqa: S307 (the module's own annotation)
    return annotation


def _flag(name: str) -> str:
    if name == "overrides":
        return "KEY=VALUE"
    option = _SHARED.get(name)
    if option is not None:
        decls = option[0].__metadata__[0].param_decls
        if decls:
            return decls[0]
    return "--" + name.replace("_", "-")


def _collect(
    options: list[tuple[str, Any, str | Callable[[Any], dict[str, Any]]]], assignments: list[str]
) -> dict[str, Any]:
    """The dotted config values the options and ``KEY=VALUE`` arguments set; one key set to
    two different values is refused."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}

    def put(key: str, value: Any, by: str) -> None:
        if key in values and values[key] != value:
            raise MRDError(
                f"The config key {key} is set twice, by {source[key]} and by {by}; give it once."
            )
        values[key] = value
        source[key] = by

    for name, value, key in options:
        if value is None:
            continue
        value = value.value if isinstance(value, Enum) else value
        pairs = key(value) if callable(key) else {key: value}
        for k, v in pairs.items():
            put(k, v, _flag(name))
    for key, value in parse_assignments(assignments).items():
        put(key, value, f"{key}={value}")
    return values


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` arguments -> {dotted key: value}, each value read as YAML (``0.5`` a
    float, ``[a, b]`` a list, ``none`` the string... as in a config file)."""
    import yaml

    from mrd_cli.config import load_yaml_text

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            raise MRDError(
                f"Unexpected argument '{item}': config overrides are KEY=VALUE with a dotted "
                "config key, e.g. distill.alpha=0.5."
            )
        try:
            value = load_yaml_text(text) if text.strip() else None
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())
            raise MRDError(f"{item}: the value is not valid YAML ({detail}).") from None
        if value is None:
            raise MRDError(
                f"{item}: give a value after '='; a key cannot be set to null on the command "
                "line (leave it out, or use --config)."
            )
        if key in out and out[key] != value:
            raise MRDError(f"The config key {key} is given twice with different values.")
        out[key] = value
    return out

"""The search space of `mrd tune`: a YAML mapping of dotted config keys to distributions.

``{float: [low, high]}`` (with ``log: true`` or ``step``), ``{int: [low, high]}`` or
``{choice: [a, b, ...]}``; ``parse_space`` checks each key against the config (an unknown
key is refused with the closest one suggested), each distribution against the key's type,
and every range's ends, alone and together, against the config's own rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrd_cli.config import (
    Config,
    builtin_config_path,
    describe_type,
    key_type,
    read_yaml,
    value_fits,
    with_values,
)
from mrd_cli.errors import MRDError

if TYPE_CHECKING:  # optuna is an optional extra, imported only when a study runs
    import optuna

KINDS = ("float", "int", "choice")
# Sections a trial may change only by pretraining its own pair.
PRETRAIN_SECTIONS = ("model", "pretrain", "partition")
REFUSED = {
    "dataset": "the data are loaded once for the whole study",
    "seed": "the seeds are set by --seed and --seeds",
    "ablate": "ablation settings play no part in a trial",
    "executor": "where the work runs plays no part in a trial",
}


@dataclass(frozen=True)
class Param:
    """One tuned key and its distribution."""

    key: str
    kind: str  # float, int or choice
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(
                self.key, self.low, self.high, log=self.log, step=self.step or 1
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def probes(self) -> list[Any]:
        """The values whose configs must validate: both ends of a range, every choice."""
        return [self.low, self.high] if self.kind != "choice" else list(self.choices)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        out: dict[str, Any] = {self.kind: [self.low, self.high]}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def default_space_path() -> Path:
    return builtin_config_path("tune_space")


def load_space(path: Path | None, cfg: Config) -> dict[str, Param]:
    """Read and check a search space file (the built-in one when ``path`` is None)."""
    path = Path(path) if path is not None else default_space_path()
    if not path.is_file():
        raise MRDError(f"Search space file not found: {path}. Check the path given to --space.")
    data = read_yaml(path)
    if not data:
        raise MRDError(f"Search space {path} is empty; give at least one key to tune.")
    return parse_space(data, cfg, where=str(path))


def parse_space(
    data: dict[str, Any], cfg: Config, where: str = "the search space"
) -> dict[str, Param]:
    """Check a search space mapping (dotted key -> distribution) against ``cfg``."""
    space: dict[str, Param] = {}
    for key, spec in data.items():
        try:
            space[str(key)] = _parse_param(str(key), spec, cfg)
        except MRDError as exc:
            raise MRDError(f"In {where}: {exc}") from None
    # Each range's ends, together, must still give valid configs (e.g. stage fractions
    # whose lower ends are all 0 would sum to 0).
    for pick in (0, -1):
        try:
            with_values(cfg, {k: p.probes()[pick] for k, p in space.items()})
        except MRDError as exc:
            ends = "lower" if pick == 0 else "upper"
            raise MRDError(f"In {where}: the {ends} ends of the ranges together: {exc}") from None
    return space


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse_param(key: str, spec: Any, cfg: Config) -> Param:
    section = key.split(".")[0]
    if section in REFUSED:
        raise MRDError(f"'{key}' cannot be tuned: {REFUSED[section]}.")
    annotation = key_type(cfg, key)  # unknown key -> closest key suggested
    if not isinstance(spec, dict):
        raise MRDError(
            f"'{key}' must map to a distribution such as {{float: [low, high]}}, "
            f"{{int: [low, high]}} or {{choice: [a, b]}}, got {spec!r}."
        )
    kinds = [k for k in spec if k in KINDS]
    extra = [k for k in spec if k not in (*KINDS, "log", "step")]
    if extra or len(kinds) != 1:
        bad = extra[0] if extra else ", ".join(map(str, kinds)) or "none"
        raise MRDError(
            f"'{key}': unknown or missing distribution ({bad}); give exactly one of "
            "float, int or choice (with log or step where they apply)."
        )
    kind = kinds[0]
    args = spec[kind]
    log = spec.get("log", False)
    step = spec.get("step")
    if not isinstance(log, bool):
        raise MRDError(f"'{key}': log must be true or false, got {log!r}.")
    if kind == "choice":
        if log or step is not None:
            raise MRDError(f"'{key}': log and step apply to float and int ranges, not choice.")
        if not isinstance(args, list) or not args:
            raise MRDError(f"'{key}': choice needs a non-empty list of values, got {args!r}.")
        for value in args:
            if not (value is None or isinstance(value, (bool, int, float, str))):
                raise MRDError(
                    f"'{key}': choice values must be numbers, strings or true/false, got {value!r}."
                )
            if not value_fits(value, annotation):
                raise MRDError(
                    f"'{key}' must be {describe_type(annotation)}; the choice {value!r} is not."
                )
        if len(set(map(repr, args))) != len(args):
            raise MRDError(f"'{key}': choice lists a value twice: {args!r}.")
        param = Param(key, kind, choices=tuple(args))
    else:
        if not (isinstance(args, list) and len(args) == 2 and all(map(_is_number, args))):
            raise MRDError(f"'{key}': {kind} needs [low, high], two finite numbers, got {args!r}.")
        low, high = args
        if kind == "int":
            if not all(isinstance(x, int) for x in args):
                raise MRDError(f"'{key}': int needs whole numbers [low, high], got {args!r}.")
            if not value_fits(low, annotation):
                raise MRDError(
                    f"'{key}' must be {describe_type(annotation)}; an int range cannot set it."
                )
        else:
            low, high = float(low), float(high)
            if not value_fits(low, annotation):
                use = "; use {int: [low, high]}" if annotation is int else ""
                raise MRDError(
                    f"'{key}' must be {describe_type(annotation)}; a float range cannot set it{use}."
                )
        if not low < high:
            raise MRDError(
                f"'{key}': the range [{args[0]}, {args[1]}] is empty or inverted; low must be "
                "below high (set a fixed value in --config instead)."
            )
        if log and low <= 0:
            raise MRDError(f"'{key}': a log range needs low > 0, got {args[0]}.")
        if step is not None:
            if not _is_number(step) or step <= 0 or (kind == "int" and not isinstance(step, int)):
                raise MRDError(f"'{key}': step must be a positive {kind}, got {step!r}.")
            if log:
                raise MRDError(f"'{key}': step and log cannot be combined.")
        param = Param(key, kind, low=low, high=high, log=log, step=step)
    for value in param.probes():
        try:
            with_values(cfg, {key: value})
        except MRDError as exc:
            raise MRDError(f"'{key}' = {value!r} gives an invalid config: {exc}") from None
    return param


def needs_pretraining(space: dict[str, Param]) -> bool:
    """Whether a trial changes what the pretrained pair or the partition depend on."""
    return any(k.split(".")[0] in PRETRAIN_SECTIONS for k in space)

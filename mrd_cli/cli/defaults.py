"""Config defaults for help texts: the value of a dotted key in the built-in configs."""

from __future__ import annotations

import functools
from typing import Any

from mrd_cli.config import BUILTIN_DATASETS, load_config


@functools.cache
def _builtin_configs() -> dict[str, Any]:
    from mrd_cli.config import Config

    return {"": Config(), **{name: load_config(name)[0] for name in BUILTIN_DATASETS}}


def builtin_values(key: str) -> dict[str, Any]:
    """{"": the dataclass default, dataset name: its built-in config's value} of ``key``."""
    out = {}
    for name, cfg in _builtin_configs().items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        out[name] = value
    return out

"""Turn the common CLI options into a core ``Session``: config, data, run directory, device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrd_cli.cli.common import err_console
from mrd_cli.config import load_config
from mrd_cli.core.device import resolve_device
from mrd_cli.core.pipeline import Session
from mrd_cli.core.rundir import RunDir
from mrd_cli.data.formats import load_corpus


def open_session(
    dataset: str,
    config: Path | None,
    data_dir: Path | None,
    run_dir: Path | None,
    device: str,
    overrides: dict[str, Any] | None = None,
    quiet: bool = False,
) -> Session:
    """Resolve config (dataset YAML, --config, CLI overrides), load the data once, pick the
    device. ``overrides`` is a nested dict of config keys set by CLI options."""
    cfg, yaml_dir = load_config(dataset, config, _drop_none(overrides or {}))
    dev = resolve_device(device)
    if quiet:
        corpus = load_corpus(cfg.dataset, data_dir, yaml_dir)
    else:
        with err_console.status(f"Loading {cfg.dataset.name} features..."):
            corpus = load_corpus(cfg.dataset, data_dir, yaml_dir)
    root = run_dir if run_dir is not None else Path("runs") / cfg.dataset.name
    return Session(cfg=cfg, corpus=corpus, run=RunDir(root), device=dev)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """Nested overrides without the options the user did not give."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _drop_none(v)
            if sub:
                out[k] = sub
        elif v is not None:
            out[k] = v
    return out

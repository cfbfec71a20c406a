"""Turn the common CLI options into a core ``Session`` (with a spinner while data loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrd_cli.cli.common import err_console
from mrd_cli.core.device import set_threads
from mrd_cli.core.session import Session


def open_session(
    dataset: str,
    config: Path | None,
    data_dir: Path | None,
    run_dir: Path | None,
    device: str,
    overrides: dict[str, Any] | None = None,
    quiet: bool = False,
) -> Session:
    """``Session.open`` with a status spinner on stderr while the features load (none with
    ``quiet``). Applies the config's ``threads`` (``torch.set_num_threads``)."""
    session = Session.open(
        dataset,
        config,
        data_dir,
        run_dir,
        device,
        overrides,
        loading=None if quiet else err_console.status,
    )
    set_threads(session.cfg.threads)
    return session

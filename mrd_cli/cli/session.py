"""Turn the shared CLI options into a core ``Session`` (with a spinner while data loads)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrd_cli.cli.common import command_name, err_console, get_current_context, shown
from mrd_cli.cli.options import RunOptions
from mrd_cli.errors import MRDError

if TYPE_CHECKING:
    from mrd_cli.core.executor import Executor
    from mrd_cli.core.session import Session

# Commands that train: they say which config files they merged before they start.
TRAINING_COMMANDS = (
    "mrd run",
    "mrd pretrain",
    "mrd partition",
    "mrd distill",
    "mrd selftrain",
    "mrd tune",
    "mrd ablate",
    "mrd compare",
)


def config_overrides(opts: RunOptions) -> dict[str, Any]:
    """The command line's dotted config values as the nested overrides ``Session.open``
    takes, each key checked against the config of ``--dataset`` and ``--config`` (an
    unknown key is refused with the closest known key suggested)."""
    from mrd_cli.config import key_type, load_config, nested_overrides

    if not opts.values:
        return {}
    base, _ = load_config(opts.dataset, opts.config)
    for key in opts.values:
        key_type(base, key)
    return nested_overrides(base, opts.values)


def open_session(
    opts: RunOptions,
    quiet: bool | None = None,
    read_only_ok: bool = False,
    lock: bool = True,
) -> Session:
    """``Session.open`` of the shared options with a status spinner on stderr while the
    features load (none with ``quiet``, by default with ``--json``), the config's
    ``threads`` applied, the corpus's warnings printed, and the run directory locked for this
    command (``core/lock.py``; ``handle_errors`` releases it when the command ends).

    With ``read_only_ok`` a run directory that cannot be written is no error: the session's
    ``writable`` is then False (``mrd evaluate`` prints its tables without saving them).
    ``lock=False`` leaves the locking to the recipe (``mrd tune``: several processes share
    a run directory, and only the preparation of the pretrained pair needs it).
    """
    from mrd_cli.core import lock as run_lock
    from mrd_cli.core.device import set_threads
    from mrd_cli.core.session import Session

    quiet = opts.json_out if quiet is None else quiet
    if opts.run_dir is not None:
        run_lock.check_run_dir(Path(opts.run_dir))
    session = Session.open(
        opts.dataset,
        opts.config,
        opts.data_dir,
        opts.run_dir,
        opts.device,
        config_overrides(opts),
        loading=None if quiet else err_console.status,
    )
    session.protocol_gap = opts.protocol_gap
    set_threads(session.cfg.threads)
    command = command_name(get_current_context(silent=True))
    if lock:
        # The lock first: a refused command prints its one Error: line and nothing else.
        writable = run_lock.acquire(session.run.root, command)
        if not writable and not read_only_ok:
            raise MRDError(
                f"The run directory {session.run.root} cannot be written. Pass --run-dir with "
                "a directory you can write to."
            )
        session.writable = writable
    if not quiet and command in TRAINING_COMMANDS:
        from mrd_cli.config import config_files

        merged = " + ".join(shown(p) for p in config_files(opts.dataset, opts.config))
        err_console.print(
            f"Config: mrd's defaults{' + ' + merged if merged else ''}.",
            highlight=False,
            soft_wrap=True,
        )
    for message in session.corpus.warnings():
        err_console.print(f"[yellow]Warning:[/] {shown(message)}", highlight=False, soft_wrap=True)
    return session


def lock_run_dir(run: Path, command: str) -> None:
    """Take the lock of an existing run directory for a command that writes into it but
    opens no session (`mrd plot`, `mrd report`); ``handle_errors`` releases it. A missing
    directory is left for the command to report (it is not created here)."""
    from mrd_cli.core import lock as run_lock

    if Path(run).is_dir():
        run_lock.acquire(Path(run), command)


@contextmanager
def open_executor(opts: RunOptions, session: Session) -> Iterator[Executor]:
    """The executor of ``--executor`` / ``--address`` for ``session``'s config (``executor``
    section); a Ray runtime it started is stopped when the command ends."""
    from mrd_cli.core.executor import make_executor

    name = opts.executor.value
    if name == "ray":
        where = opts.address or "a Ray runtime on this machine"
        err_console.print(f"Executor: Ray ({shown(where)}).")
    executor = make_executor(name, session.cfg.executor, opts.address)
    if name == "processes":
        err_console.print(f"Executor: up to {executor.slots()} worker processes on this machine.")
    try:
        yield executor
    finally:
        executor.close()

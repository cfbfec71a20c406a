"""What every subcommand shares: consoles, error handling, output (options: ``options.py``).

People read Rich output on stderr (progress, messages) and stdout (tables); with ``--json``
stdout carries exactly one JSON object and nothing else.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from mrd_cli.core import lock
from mrd_cli.errors import MRDError
from mrd_cli.safetext import safe_text

# Recent Typer releases carry their own copy of click (``typer._click``); older ones use click.
try:
    from typer._click import exceptions as click_exceptions
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - typer < 0.20
    from click import exceptions as click_exceptions  # type: ignore[no-redef] # noqa: F401
    from click import get_current_context  # type: ignore[no-redef] # noqa: F401

if TYPE_CHECKING:
    from mrd_cli.recipes.pretrain import TrainedModels

# Progress bars, warnings and errors: never on stdout, so --json output stays clean.
err_console = Console(stderr=True)


class _FlagsWithoutMetavar:
    """Help that reads well: no ``<bool>`` type beside a flag (``--json``, ``--help``; a
    flag takes no value) and no line broken where the docstring's source line ended."""

    params: list[Any]

    help: str | None

    def _tidy_help(self) -> None:
        """No ``<bool>`` beside flags; docstring paragraphs as one line each, so that the
        help wraps them at the terminal's width instead of where the source broke them."""
        if self.help:
            paragraphs = inspect.cleandoc(self.help).split("\n\n")
            self.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)
        for param in self.params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option


class Command(_FlagsWithoutMetavar, TyperCommand):
    """Every subcommand's click class (``app.command(..., cls=Command)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tidy_help()


class Group(_FlagsWithoutMetavar, TyperGroup):
    """A command group's click class (``mrd`` and ``mrd data``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tidy_help()


F = TypeVar("F", bound=Callable[..., Any])


def shown(value: object, *, newlines: bool = False) -> str:
    """``value`` as Rich markup that prints as itself: every path, name, label, message or
    other text from a user or a file goes through this before it reaches a console or a
    table (``[bold]`` in a run directory's name stays ``[bold]``, ``[/x]`` is no error,
    escape sequences are shown, not obeyed, URL passwords are masked)."""
    return escape(safe_text(value, newlines=newlines))


def handle_errors(func: F) -> F:
    """Turn project errors into one message on stderr and an exit code, without a traceback.

    ``MRDError`` exits with its own code (2 or 1), a file-system ``OSError`` with 1, Ctrl-C
    with 130 and SIGTERM (turned into ``Terminated`` by ``cli/app.py``) with 143, after
    saying how to resume. A ``debug=True`` keyword argument re-raises instead, for
    developers. Whatever happens, the run-directory locks the command took are released.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug", False))
        SIGTERM_SEEN.clear()
        try:
            return _run_releasing_locks(func, args, kwargs)
        except MRDError as exc:
            if debug:
                raise
            # Through ``shown``: a message may quote values in brackets ("got [inf, 0, 0]")
            # that Rich would otherwise take for markup, paths with escape sequences, URLs.
            err_console.print(
                f"[bold red]Error:[/] {shown(exc, newlines=True)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            # A full disk or a permission problem while a file is read or written: the atomic
            # writes leave the previous files in place.
            if debug:
                raise
            where = f" {shown(exc.filename)}" if exc.filename else ""
            err_console.print(
                f"[bold red]Error:[/] could not read or write{where}: "
                f"{shown(exc.strerror or exc)}. "
                "Check the path, its permissions and the free disk space; files written "
                "before were kept.",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            if debug:
                raise
            terminated = was_terminated(exc)
            what = "Terminated" if terminated else "Interrupted"
            command = command_name(get_current_context(silent=True))
            err_console.print(
                f"[yellow]{what}.[/] Finished files were kept. {resume_advice(command)}",
                soft_wrap=True,
            )
            raise typer.Exit(143 if terminated else 130) from None

    return wrapper  # type: ignore[return-value]


def resume_advice(command: str) -> str:
    """How to continue an interrupted ``command`` (``mrd <subcommand>``)."""
    if command in ("mrd pretrain", "mrd distill", "mrd selftrain"):
        return f"To continue where it stopped, rerun `{command}` with --resume."
    folds = "the partition's fold models resume from their last finished epoch (local executor)"
    if command == "mrd partition":
        return f"To continue, rerun `{command}` as it was: {folds}."
    if command in ("mrd run", "mrd ablate"):
        return f"To continue, rerun `{command}` as it was: finished steps are reused and {folds}."
    if command == "mrd compare":
        return f"To continue, rerun `{command}` as it was: finished cells are reused."
    if command == "mrd features":
        return (
            "No feature file was replaced (they are written aside, then renamed all at "
            f"once). Rerun the same `{command}` command: the utterances already encoded are in "
            "the embedding cache and are not encoded again."
        )
    return f"Rerun `{command}` to start it again."


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the handler ``cli/app.py`` installs, so that it
    unwinds like Ctrl-C: temporary files removed, locks released, the same advice."""


# Set by the SIGTERM handler (``on_sigterm``): the exit code is 143 even when what reaches
# ``handle_errors`` is no longer the ``Terminated`` the handler raised.
SIGTERM_SEEN = threading.Event()


def was_terminated(exc: BaseException) -> bool:
    """Whether an interruption came from SIGTERM. A library that catches the handler's
    ``Terminated`` may raise a plain KeyboardInterrupt in its place (Ray's waits do)."""
    return isinstance(exc, Terminated) or SIGTERM_SEEN.is_set()


def on_sigterm(signum: int, frame: Any) -> None:
    """The CLI's SIGTERM handler: unwind like Ctrl-C, remembered as a termination."""
    SIGTERM_SEEN.set()
    raise Terminated()


def _run_releasing_locks(func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    finally:
        lock.release_all()


def command_name(ctx: Any) -> str:
    """``mrd <subcommand ...>`` of a click context, whatever the program was called."""
    if ctx is None:
        return "mrd"
    root = ctx.find_root().command_path
    return " ".join(["mrd", *ctx.command_path[len(root) :].split()])


def print_json(obj: Any) -> None:
    """Write one JSON object to stdout (and nothing else)."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def out_console() -> Console:
    """Console for result tables on stdout; wide when redirected, so tables stay whole in
    a file or a log instead of being squeezed into 80 columns."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=220)


def report_selected(result: TrainedModels, json_out: bool) -> None:
    """Say which epoch was chosen for each trained model, for people or as JSON."""
    stage = result.stage
    if json_out:
        from mrd_cli.core.card import card_path, read_card_fields

        doc = result.to_dict()
        for entry in doc[stage].values():  # each model's card (``core/card.py``)
            entry["card"] = read_card_fields(card_path(Path(entry["checkpoint"])))
        print_json(doc)
        return
    summary = result.to_dict()[stage]
    for role, s in summary.items():
        decision = s.get("decision")
        if decision is not None:  # distillation: changed or kept, and why
            mark = "[green]✓[/]" if decision["changed"] else "[yellow]=[/]"
            err_console.print(
                f"{mark} {stage} {role}: {shown(decision['reason'])} -> "
                f"{shown(s['checkpoint'])}"
            )
            continue
        gain = ""
        if s.get("start_val_weighted_f1") is not None:
            gain = f", pretrained {s['start_val_weighted_f1']:.2f}"
        err_console.print(
            f"[green]✓[/] {stage} {role}: epoch {s['epoch']} chosen on validation "
            f"(val W-F1 {s['val_weighted_f1']:.2f}{gain}) -> {shown(s['checkpoint'])}"
        )

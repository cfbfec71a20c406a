"""The `mrd` Typer application: registers one thin module per subcommand.

Usage errors (an unknown option, a bad option value) are printed like every other error:
one line ``Error: ...`` on stderr, exit 2, instead of click's boxed panel. SIGTERM is turned
into ``Terminated`` (a ``KeyboardInterrupt``) so that it unwinds like Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mrd_cli.cli import data_cmd
from mrd_cli.cli.ablate import ablate
from mrd_cli.cli.common import (
    Command,
    Group,
    click_exceptions,
    command_name,
    on_sigterm,
)
from mrd_cli.cli.compare import compare
from mrd_cli.cli.distill import distill
from mrd_cli.cli.evaluate import evaluate
from mrd_cli.cli.features import features
from mrd_cli.cli.partition import partition
from mrd_cli.cli.plot import plot
from mrd_cli.cli.predict import predict
from mrd_cli.cli.pretrain import pretrain
from mrd_cli.cli.report import report
from mrd_cli.cli.run import run
from mrd_cli.cli.selftrain import selftrain
from mrd_cli.cli.tune import tune


class OneLineErrors(Group):
    """The root group: click's own errors become one ``Error:`` line (exit 2 for usage)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        given = args[0] if args else kwargs.get("args")
        argv = list(given if given is not None else sys.argv[1:])
        empty = _empty_path_option(self, argv)
        if empty:
            sys.stderr.write(
                f"Error: {empty} was given an empty path; an empty path would mean the "
                "working directory. Give the path, or leave the option out for its default.\n"
            )
            sys.exit(2)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click_exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click_exceptions.ClickException as exc:
            message = " ".join(exc.format_message().replace("Value error, ", "").split())
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click_exceptions.UsageError) and ctx is not None:
                stop = "" if message.endswith((".", "!", "?")) else "."
                message += f"{stop} See `{command_name(ctx)} --help`."
            sys.stderr.write(f"Error: {message}\n")
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.stderr.write("Error: aborted.\n")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _empty_path_option(group: Any, argv: list[str]) -> str | None:
    """The first path option of the invoked command that ``argv`` gives an empty value
    (``--run-dir ""`` or ``--run-dir=``), or None."""
    command = group
    for token in argv:
        sub = getattr(command, "commands", {}).get(token)
        if sub is None:
            if not token.startswith("-") and getattr(command, "commands", None):
                return None  # unknown subcommand: click reports it
            continue
        command = sub
    opts = {
        opt
        for param in getattr(command, "params", [])
        if getattr(getattr(param, "type_descriptor", None), "annotation", None) is Path
        for opt in param.opts
    }
    for i, token in enumerate(argv):
        name, eq, value = token.partition("=")
        if name in opts and (
            (eq and not value) or (not eq and i + 1 < len(argv) and argv[i + 1] == "")
        ):
            return name
    return None


app = typer.Typer(
    cls=OneLineErrors,
    name="mrd",
    help=(
        "Mutual Refinement Distillation for multimodal emotion recognition in conversations: "
        "pretrain -> partition -> distill -> evaluate, ablate, compare backbones, tune, "
        "figures and paper tables of a run, and self-training with few labels."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        from mrd_cli.core.version import __version__, git_commit

        sys.stdout.write(f"mrd {__version__} (git commit {git_commit()})\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print mrd's version and git commit, and exit.",
        ),
    ] = False,
) -> None:
    """Mutual Refinement Distillation for multimodal emotion recognition in conversations."""


app.command("run", cls=Command)(run)
app.command("pretrain", cls=Command)(pretrain)
app.command("partition", cls=Command)(partition)
app.command("distill", cls=Command)(distill)
app.command("evaluate", cls=Command)(evaluate)
app.command("predict", cls=Command)(predict)
app.command("ablate", cls=Command)(ablate)
app.command("compare", cls=Command)(compare)
app.command("tune", cls=Command)(tune)
app.command("plot", cls=Command)(plot)
app.command("report", cls=Command)(report)
app.command("selftrain", cls=Command)(selftrain)
app.add_typer(data_cmd.app, name="data")
app.command("features", cls=Command)(features)


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    app()

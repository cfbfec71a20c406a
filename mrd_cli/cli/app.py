"""The `mrd` Typer application: registers one thin module per subcommand.

Usage errors (an unknown option, a bad option value) are printed like every other error:
one line ``Error: ...`` on stderr, exit 2, instead of click's boxed panel. SIGTERM is turned
into ``Terminated`` (a ``KeyboardInterrupt``) so that it unwinds like Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from mrd_cli.cli import data_cmd
from mrd_cli.cli.ablate import ablate
from mrd_cli.cli.common import Command, Group, Terminated, click_exceptions, command_name
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


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    app()

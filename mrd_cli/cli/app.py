"""The `mrd` Typer application: registers one thin module per subcommand."""

from __future__ import annotations

import typer

from mrd_cli.cli import data_cmd
from mrd_cli.cli.ablate import ablate
from mrd_cli.cli.distill import distill
from mrd_cli.cli.evaluate import evaluate
from mrd_cli.cli.features import features
from mrd_cli.cli.partition import partition
from mrd_cli.cli.pretrain import pretrain
from mrd_cli.cli.run import run

app = typer.Typer(
    name="mrd",
    help=(
        "Mutual Refinement Distillation for multimodal emotion recognition in conversations: "
        "pretrain -> partition -> distill -> evaluate, and ablate."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("pretrain")(pretrain)
app.command("partition")(partition)
app.command("distill")(distill)
app.command("evaluate")(evaluate)
app.command("ablate")(ablate)
app.add_typer(data_cmd.app, name="data")
app.command("features")(features)


def main() -> None:
    app()

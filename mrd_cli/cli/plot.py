"""`mrd plot`: figures of a run directory (PNG and SVG under RUN/plots/), and what the
``--plots`` option of the training commands draws."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.options import RunOptions, command

RunArg = Annotated[
    Path, typer.Argument(help="The run directory (the --run-dir the results were made in).")
]


class Split(str, Enum):
    test = "test"
    val = "val"


class Format(str, Enum):
    png = "png"
    svg = "svg"
    pdf = "pdf"


@command()
def plot(
    opts: RunOptions,
    run: RunArg,
    split: Annotated[
        Split, typer.Option("--split", help="Split whose metrics give the confusion matrices.")
    ] = Split.test,
    formats: Annotated[
        list[Format] | None,
        typer.Option("--format", help="File format (repeatable; default: png and svg)."),
    ] = None,
) -> None:
    """Figures of a run directory, as PNG and SVG files under RUN/plots/.

    Confusion matrices (counts and row %), validation W-F1 per epoch of pretraining and
    distillation (curriculum stages shaded), partition group sizes per class, the ablation
    (mean ± std, significance) and tuning studies: each one the run has the results for.

    Reads the run directory only (nothing is trained). Needs matplotlib, the optional
    plots extra (see the README).
    """
    from mrd_cli.cli.session import lock_run_dir
    from mrd_cli.core.figures import FORMATS
    from mrd_cli.recipes.plot import plot as plot_recipe

    chosen = tuple(f.value for f in formats) if formats else FORMATS
    lock_run_dir(run, "mrd plot")  # it writes RUN/plots/: not while another command writes
    result = plot_recipe(run, split.value, chosen).to_dict()
    if opts.json_out:
        print_json(result)
        return
    out_console().print(plots_table(result))
    err_console.print(f"Saved to {shown(str(Path(run) / 'plots'))}")


def plots_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"Figures of {shown(result['run_dir'])}", title_justify="left")
    table.add_column("figure")
    table.add_column("files")
    for name, files in result["figures"].items():
        table.add_row(shown(name), shown(", ".join(Path(f).name for f in files)))
    for name, why in result["skipped"].items():
        table.add_row(shown(name), f"[dim]skipped: {shown(why)}[/]")
    return table


def check_plots_extra(plots: bool) -> None:
    """Refuse ``--plots`` before any training when matplotlib is missing."""
    if plots:
        from mrd_cli.core.figures import require_matplotlib

        require_matplotlib()


def draw_plots(run: Path, json_out: bool) -> dict[str, Any]:
    """``mrd plot RUN`` at the end of another command: what was drawn (its JSON), and a
    line on stderr for people."""
    from mrd_cli.cli.session import lock_run_dir
    from mrd_cli.recipes.plot import plot as plot_recipe

    lock_run_dir(run, "mrd plot")  # held already by the command drawing them: counted
    result = plot_recipe(run).to_dict()
    if not json_out:
        err_console.print(
            f"Figures ({len(result['figures'])}) saved to {shown(str(Path(run) / 'plots'))}"
        )
    return result

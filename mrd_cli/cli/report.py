"""`mrd report`: the paper's tables from a run directory, as Markdown and LaTeX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.options import RunOptions, command
from mrd_cli.cli.plot import RunArg, Split
from mrd_cli.errors import MRDError


@command()
def report(
    opts: RunOptions,
    run: RunArg,
    split: Annotated[
        Split,
        typer.Option("--split", help="Split whose metrics give the ambiguity and F1 tables."),
    ] = Split.test,
    html: Annotated[
        bool,
        typer.Option(
            "--html",
            help="Also write RUN/report/report.html: one self-contained page (tables, the "
            "figures inlined, needing the plots extra; the model cards) that opens without a "
            "server.",
        ),
    ] = False,
) -> None:
    """The paper's tables of a run directory, in Markdown and LaTeX under RUN/report/.

    Ambiguity counts per class (Tables 1-2, on the evaluated split and the training
    partition), per-class F1 and W-F1 of pretrained vs distilled (Table 4), and the ablation
    with mean ± std, Δ and significance (Table 5): each one the run has the results for.

    Reads the run directory only; writes RUN/report/<table>.md and .tex (booktabs), all
    tables in tables.md and tables.tex, and tables_standalone.tex, a document that compiles.
    """
    from mrd_cli.cli.session import lock_run_dir
    from mrd_cli.recipes.report import report as report_recipe

    lock_run_dir(run, "mrd report")  # it writes RUN/report/: not while another command writes
    if html:
        from mrd_cli.recipes.html_report import html_report

        page = html_report(run, split.value)
        try:
            result = report_recipe(run, split.value).to_dict()
        except MRDError:  # no paper table yet: the page (cards, figures) is still written
            result = {
                "run_dir": str(run),
                "split": split.value,
                "tables": {},
                "skipped": {},
                "combined": {},
            }
        result["html"] = str(page)
    else:
        result = report_recipe(run, split.value).to_dict()
    if opts.json_out:
        print_json(result)
        return
    out_console().print(tables_table(result))
    err_console.print(f"Saved to {shown(str(Path(run) / 'report'))}")
    if result.get("html"):
        err_console.print(f"HTML report: {shown(result['html'])}")


def tables_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"Tables of {shown(result['run_dir'])}", title_justify="left")
    table.add_column("table")
    table.add_column("files")
    for name, files in result["tables"].items():
        table.add_row(shown(name), shown(", ".join(Path(f).name for f in files.values())))
    for name, why in result["skipped"].items():
        table.add_row(shown(name), f"[dim]skipped: {shown(why)}[/]")
    combined = ", ".join(Path(f).name for f in result["combined"].values())
    table.caption = f"All tables: {shown(combined)}"
    return table

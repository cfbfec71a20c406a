"""`--protocol-gap`: the diagnostic of what a test-selected protocol would report
(``core/protocol_gap.py``), and its table under the honest results."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mrd_cli.cli.common import err_console, shown
from mrd_cli.core.protocol_gap import gap_table

ProtocolGapOpt = Annotated[
    bool,
    typer.Option(
        "--protocol-gap",
        help="DIAGNOSTIC: also score every model on the test split after each training "
        "epoch, kept apart from everything that selects, and report beside each honest "
        "figure (epoch chosen on validation) what keeping the best TEST epoch, as the public "
        "M3Net/CMERC/MRD scripts do, would have reported. Checkpoints and honest figures are "
        "the same with or without it.",
    ),
]


def print_gap(console: Console, metrics: dict[str, Any] | None, *summaries: Any) -> None:
    """The diagnostic's table, when any model carries it."""
    table = gap_table(metrics, *summaries)
    if table is None:
        return
    rich = Table(title=shown(table.caption), title_justify="left", style="yellow")
    for col, align in zip(table.columns, table.align):
        rich.add_column(shown(col), justify={"l": "left", "r": "right", "c": "center"}[align])
    for row in table.rows:
        rich.add_row(*map(shown, row))
    console.print(rich)


def warn_missing_gap(result: dict[str, Any]) -> None:
    """Say which evaluated models carry no diagnostic (trained before, without the option:
    a reused pretrained pair, say) and how to get it."""
    missing = [n for n, r in result["models"].items() if "test_selected_diagnostic" not in r]
    if missing:
        err_console.print(
            f"[yellow]Warning:[/] no protocol-gap diagnostic for {', '.join(missing)}: trained "
            "earlier without --protocol-gap (reused). Pass --force to train them again with it."
        )

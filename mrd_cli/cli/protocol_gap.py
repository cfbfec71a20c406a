"""The table of the `--protocol-gap` diagnostic (what a test-selected protocol would report,
``core/protocol_gap.py``) under the honest results; the option is in ``options.py``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from mrd_cli.cli.common import shown


def print_gap(console: Console, metrics: dict[str, Any] | None, *summaries: Any) -> None:
    """The diagnostic's table, when any model carries it."""
    from mrd_cli.core.protocol_gap import gap_table

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
    from mrd_cli.cli.common import err_console

    missing = [n for n, r in result["models"].items() if "test_selected_diagnostic" not in r]
    if missing:
        err_console.print(
            f"[yellow]Warning:[/] no protocol-gap diagnostic for {', '.join(missing)}: trained "
            "earlier without --protocol-gap (reused). Pass --force to train them again with it."
        )

"""The `mrd` command line: one thin Typer module per command over the recipes."""

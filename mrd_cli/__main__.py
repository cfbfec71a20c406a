"""Entry point for ``python -m mrd_cli``."""

from mrd_cli.cli.app import main

main()

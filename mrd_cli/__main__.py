"""Entry point for ``python -m mrd_cli``."""

from mrd_cli.cli.app import main

if __name__ == "__main__":  # not when a worker process (spawn) imports this module
    main()

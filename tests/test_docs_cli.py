"""docs/cli.md is the CLI reference the Typer app generates, and it is current."""

from __future__ import annotations

from pathlib import Path

from mrd_cli.cli.docgen import reference

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_the_committed_cli_reference_is_what_the_app_generates():
    assert PAGE.read_text() == reference(), (
        "docs/cli.md is out of date: run `python -m mrd_cli.cli.docgen > docs/cli.md`"
    )


def test_the_reference_names_every_command_and_option():
    from typer.main import get_command

    from mrd_cli.cli.app import app

    page = reference()
    root = get_command(app)
    for name, cmd in root.commands.items():
        assert f"## mrd {name}\n" in page
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert f"`{opt}`" in page, (name, opt)

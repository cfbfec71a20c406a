"""The CLI reference as Markdown, generated from the Typer app: every command, argument,
option and default. ``python -m mrd_cli.cli.docgen > docs/cli.md`` writes the page; a
test fails when the committed page differs from what the app generates."""

from __future__ import annotations

import inspect
import sys
from enum import Enum
from typing import Any

from typer.main import get_command

from mrd_cli.cli.app import app

HEADER = """# CLI reference

Every `mrd` command with its arguments, options and defaults, generated from the
application itself (`python -m mrd_cli.cli.docgen > docs/cli.md`; a test checks that this
page is current). `mrd COMMAND --help` prints the same. Defaults written "config KEY" come
from the dataset's config (the built-in value, then where a built-in dataset differs).
Commands that open a dataset also take `KEY=VALUE` config overrides with the dotted keys
of the config files (`distill.alpha=0.5`); the backbones are described in
[backbones](backbones.md).
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(param: Any) -> str:
    if getattr(param, "is_flag", False) and not getattr(param, "secondary_opts", None):
        return ""
    value = param.default
    if callable(value) or value is None or value == () or value == []:
        return ""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"`{value}`"


def _kind(param: Any, ctx: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    kind = str(param.display_type(ctx) or "").strip("<>")
    if kind.startswith("list[") and kind.endswith("]"):
        kind = kind[5:-1] + " (repeatable)"
    if getattr(param, "min", None) is not None or getattr(param, "max", None) is not None:
        kind = kind.replace(" range", "")
        kind += f", {param._get_number_range_help_str()}"
    return kind.replace("|", ", ")


def _names(param: Any) -> str:
    if param.param_type_name == "argument":
        return f"`{param.metavar or param.name.upper()}`"
    names = [*param.opts, *param.secondary_opts]
    return ", ".join(f"`{n}`" for n in names)


def _command(path: list[str], cmd: Any, ctx: Any) -> list[str]:
    lines = [f"## {' '.join(path)}", ""]
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    lines += [f"`{' '.join(path)} {usage}`", ""]
    if cmd.help:
        lines += [" ".join(p.split()) + "\n" for p in inspect.cleandoc(cmd.help).split("\n\n")]
    rows = [p for p in cmd.get_params(ctx) if p.name != "help"]
    if rows:
        lines += ["| argument or option | type | default | what it does |", "|---|---|---|---|"]
        for p in rows:
            lines.append(
                f"| {_names(p)} | {_cell(_kind(p, ctx))} | {_cell(_default(p))} "
                f"| {_cell(getattr(p, 'help', '') or '')} |"
            )
        lines.append("")
    return lines


def reference() -> str:
    """The Markdown page of every command of ``mrd``."""
    import click

    root = get_command(app)
    root_ctx = click.Context(root, info_name="mrd")
    out = [HEADER, *_command(["mrd"], root, root_ctx)]
    for name, cmd in root.commands.items():
        ctx = click.Context(cmd, info_name=name, parent=root_ctx)
        sub = getattr(cmd, "commands", None)
        if sub:
            out += _command(["mrd", name], cmd, ctx)
            for sub_name, sub_cmd in sub.items():
                sub_ctx = click.Context(sub_cmd, info_name=sub_name, parent=ctx)
                out += _command(["mrd", name, sub_name], sub_cmd, sub_ctx)
        else:
            out += _command(["mrd", name], cmd, ctx)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())

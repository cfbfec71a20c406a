"""`mrd evaluate`: metrics, confusion matrices and the ambiguity table of checkpoints."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mrd_cli.cli.common import (
    ConfigOpt,
    DataDirOpt,
    DatasetOpt,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    RunDirOpt,
    err_console,
    handle_errors,
    out_console,
    print_json,
)
from mrd_cli.cli.render import print_evaluation
from mrd_cli.cli.session import open_session
from mrd_cli.recipes.evaluate import evaluate as evaluate_recipe
from mrd_cli.recipes.evaluate import metrics_path


class Split(str, Enum):
    test = "test"
    val = "val"


@handle_errors
def evaluate(
    dataset: DatasetOpt = "synthetic",
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="Checkpoint to evaluate (repeatable) (default: all found in the run directory).",
        ),
    ] = None,
    split: Annotated[Split, typer.Option("--split", help="Split to evaluate on.")] = Split.test,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    no_confusion: Annotated[
        bool, typer.Option("--no-confusion", help="Do not print the confusion matrices.")
    ] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Per-class F1, W-F1, accuracy, macro F1, confusion matrices and the ambiguity table.

    Results are also saved as RUN/metrics/<split>.json.
    """
    session = open_session(dataset, config, data_dir, run_dir, device, quiet=json_out)
    found = {_name_of(p, i): p for i, p in enumerate(checkpoint)} if checkpoint else None
    result = evaluate_recipe(session, found, split.value).to_dict()
    path = metrics_path(session, split.value)
    if json_out:
        print_json(result)
        return
    print_evaluation(out_console(), result, confusion=not no_confusion)
    err_console.print(f"Saved to {path}")


def _name_of(path: Path, index: int) -> str:
    """Name a given checkpoint like the run-directory ones (stage/role) when it is one."""
    if path.parent.name in ("pretrain", "distill") and path.stem in ("multi", "text"):
        return f"{path.parent.name}/{path.stem}"
    return str(path)

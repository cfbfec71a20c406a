"""`mrd evaluate`: metrics, confusion matrices and the ambiguity table of checkpoints."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.options import RunOptions, command
from mrd_cli.cli.run import NoConfusionOpt
from mrd_cli.errors import MRDError

if TYPE_CHECKING:
    from mrd_cli.core.rundir import RunDir


class Split(str, Enum):
    test = "test"
    val = "val"


@command("session", "plots")
def evaluate(
    opts: RunOptions,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="Checkpoint to evaluate (repeatable) (default: all found in the run directory).",
        ),
    ] = None,
    split: Annotated[Split, typer.Option("--split", help="Split to evaluate on.")] = Split.test,
    no_confusion: NoConfusionOpt = False,
) -> None:
    """Per-class F1, W-F1, accuracy, macro F1, confusion matrices and the ambiguity table.

    Results are also saved as RUN/metrics/<split>.json.
    """
    from mrd_cli.cli.plot import check_plots_extra, draw_plots
    from mrd_cli.cli.render import print_evaluation
    from mrd_cli.cli.session import open_session
    from mrd_cli.recipes.evaluate import evaluate as evaluate_recipe
    from mrd_cli.recipes.evaluate import metrics_path

    check_plots_extra(opts.plots)
    session = open_session(opts, read_only_ok=True)
    found = _named(checkpoint, session.run) if checkpoint else None
    outcome = evaluate_recipe(session, found, split.value)
    result = outcome.to_dict()
    if opts.plots and outcome.saved_to:  # the figures are of the run directory's saved results
        result["plots"] = draw_plots(session.run.root, opts.json_out)
    elif opts.plots:
        err_console.print("[yellow]Warning:[/] no figures: these metrics were not saved.")
    if opts.json_out:
        print_json(result)
        return
    print_evaluation(out_console(), result, confusion=not no_confusion)
    for name, report in result["models"].items():
        budget = report.get("selftrain") or {}
        if budget.get("transductive"):
            err_console.print(
                f"[yellow]Warning:[/] {shown(name)} is TRANSDUCTIVE: `mrd selftrain "
                "--transductive` trained it on pseudo-labels of the test features, so its "
                "test scores are not comparable with inductive ones.",
                highlight=False,
                soft_wrap=True,
            )
        elif budget:
            err_console.print(
                f"{shown(name)}: `mrd selftrain` model, labels of "
                f"{100 * budget.get('labeled_fraction', 1.0):.0f}% of the training dialogues.",
                highlight=False,
            )
    for problem in result["provenance"]["problems"]:
        err_console.print(
            f"[yellow]Warning:[/] {shown(problem)}; Δ columns left out. Rerun the steps "
            "after it (`mrd run` redoes what is out of date).",
            highlight=False,
            soft_wrap=True,
        )
    if outcome.saved_to:
        err_console.print(f"Saved to {outcome.saved_to}")
    elif found and any(n == str(p) for n, p in found.items()):
        err_console.print(
            f"Not saved: checkpoints from outside {session.run.root} are not this run's "
            "results (pass --run-dir of the run they belong to)."
        )
    else:
        err_console.print(
            f"Not saved: {metrics_path(session, split.value)} cannot be written (read-only)."
        )


def _named(paths: list[Path], run: RunDir) -> dict[str, Path]:
    """Name each given checkpoint: ``stage/role`` when it is the run directory's own file,
    else its path, so that no other run's model is labelled as this run's. The same name
    twice is refused rather than one of them dropped."""
    from mrd_cli.core.rundir import ROLES

    own = {
        f"{stage}/{role}": path_of(role).resolve()
        for stage, path_of in run.stages()
        for role in ROLES
    }
    named: dict[str, Path] = {}
    for path in paths:
        name = next((n for n, p in own.items() if p == path.resolve()), str(path))
        if name in named or any(p.resolve() == path.resolve() for p in named.values()):
            raise MRDError(
                f"--checkpoint {path} is given twice; pass each checkpoint once (results are "
                "keyed by checkpoint, so one of them would be dropped)."
            )
        named[name] = path
    return named

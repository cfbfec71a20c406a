"""`mrd partition`: split training utterances into difficult / general / simple."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.options import RunOptions, command, config_default


def _cross_fit(folds: int) -> dict[str, Any]:
    return {"partition.method": "cross_fit", "partition.folds": folds}


def _in_sample(on: bool) -> dict[str, Any]:
    return {"partition.method": "in_sample"} if on else {}


@command("session", "training", "executor", keys={"cross_fit": _cross_fit, "in_sample": _in_sample})
def partition(
    opts: RunOptions,
    cross_fit: Annotated[
        int | None,
        typer.Option(
            "--cross-fit",
            min=2,
            help="Use out-of-fold predictions of K fold-model pairs "
            f"({config_default('partition.method')}; {config_default('partition.folds')}).",
        ),
    ] = None,
    in_sample: Annotated[
        bool,
        typer.Option(
            "--in-sample",
            help="Use the pretrained checkpoints' own predictions on their training data.",
        ),
    ] = False,
    multi_checkpoint: Annotated[
        Path | None, typer.Option("--multi", help="Pretrained multimodal checkpoint.")
    ] = None,
    text_checkpoint: Annotated[
        Path | None, typer.Option("--text", help="Pretrained text checkpoint.")
    ] = None,
) -> None:
    """Partition training utterances by the two pretrained models (Eq. 9-13).

    Writes RUN/partition.json with provenance and prints the counts per group and class.
    With --executor processes or ray the cross-fitted fold models of each role run as one
    unit (a worker process or a Ray task; the two roles side by side).
    """
    from mrd_cli.cli.progress import epoch_bars
    from mrd_cli.cli.session import open_executor, open_session
    from mrd_cli.recipes.partition import partition as partition_recipe

    session = open_session(opts)
    paths = {
        "multi": multi_checkpoint or session.run.pretrained("multi"),
        "text": text_checkpoint or session.run.pretrained("text"),
    }
    p = session.cfg.partition
    err_console.print(
        f"Partitioning {session.corpus.num_utterances('train')} training utterances "
        f"({'cross-fitted, ' + str(p.folds) + ' folds' if p.method == 'cross_fit' else 'in-sample'})."
    )
    with open_executor(opts, session) as runner, epoch_bars() as bars:
        result = partition_recipe(
            session,
            checkpoints=paths,
            on_event=bars,
            executor=runner,
        )
    doc = result.document
    if opts.json_out:
        print_json(result.to_dict())
        return
    out_console().print(partition_table(doc, session.corpus.label_names))
    err_console.print(f"Saved to {shown(session.run.partition)}")


def partition_table(doc: dict, labels: list[str]) -> Table:
    """Counts per group and class, the layout of the paper's Tables 1-2."""
    method = doc["method"] + (f", {doc['folds']} folds" if doc.get("folds") else "")
    table = Table(title=f"Training-set partition ({method})", title_justify="left")
    table.add_column("group")
    table.add_column("text / multi")
    for lab in labels:
        table.add_column(shown(lab), justify="right")
    table.add_column("total", justify="right")
    table.add_column("share", justify="right")
    described = {
        "mcti": ("Difficult_1 (MCTI)", "wrong / right"),
        "mitc": ("Difficult_2 (MITC)", "right / wrong"),
        "general": ("General", "wrong / wrong"),
        "simple": ("Simple", "right / right"),
    }
    grand = sum(doc["totals"].values()) or 1
    for group, (name, who) in described.items():
        counts = doc["counts"][group]
        total = doc["totals"][group]
        table.add_row(
            name,
            who,
            *[str(counts[lab]) for lab in labels],
            str(total),
            f"{100 * total / grand:.1f}%",
        )
    return table

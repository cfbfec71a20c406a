"""`mrd partition`: split training utterances into difficult / general / simple."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mrd_cli.cli.common import (
    AddressOpt,
    ConfigOpt,
    DataDirOpt,
    DatasetOpt,
    DebugOpt,
    DeviceOpt,
    ExecutorKind,
    ExecutorOpt,
    JsonOpt,
    NoEarlyStopOpt,
    RunDirOpt,
    SeedOpt,
    ThreadsOpt,
    err_console,
    handle_errors,
    out_console,
    print_json,
    shown,
    training_overrides,
)
from mrd_cli.cli.progress import epoch_bars
from mrd_cli.cli.session import open_executor, open_session
from mrd_cli.recipes.partition import partition as partition_recipe


@handle_errors
def partition(
    dataset: DatasetOpt = "synthetic",
    cross_fit: Annotated[
        int | None,
        typer.Option(
            "--cross-fit",
            help="Use out-of-fold predictions of K fold-model pairs (K >= 2) "
            "(default: the config's partition.method, cross_fit with 5 folds on real data).",
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
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    threads: ThreadsOpt = None,
    no_early_stop: NoEarlyStopOpt = False,
    executor: ExecutorOpt = ExecutorKind.local,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Partition training utterances by the two pretrained models (Eq. 9-13).

    Writes RUN/partition.json with provenance and prints the counts per group and class.
    With --executor processes or ray the cross-fitted fold models of each role run as one
    unit (a worker process or a Ray task; the two roles side by side).
    """
    if cross_fit is not None and in_sample:
        from mrd_cli.errors import MRDError

        raise MRDError("Use either --cross-fit K or --in-sample, not both.")
    overrides: dict = {"seed": seed, "partition": {}}
    if cross_fit is not None:
        overrides["partition"] = {"method": "cross_fit", "folds": cross_fit}
    elif in_sample:
        overrides["partition"] = {"method": "in_sample"}
    overrides = training_overrides(overrides, threads, no_early_stop)
    session = open_session(dataset, config, data_dir, run_dir, device, overrides, quiet=json_out)
    paths = {
        "multi": multi_checkpoint or session.run.pretrained("multi"),
        "text": text_checkpoint or session.run.pretrained("text"),
    }
    p = session.cfg.partition
    err_console.print(
        f"Partitioning {session.corpus.num_utterances('train')} training utterances "
        f"({'cross-fitted, ' + str(p.folds) + ' folds' if p.method == 'cross_fit' else 'in-sample'})."
    )
    with open_executor(executor, address, session) as runner, epoch_bars() as bars:
        result = partition_recipe(
            session,
            checkpoints=paths,
            on_event=bars,
            executor=runner,
        )
    doc = result.document
    if json_out:
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

"""`mrd run`: pretrain -> partition -> distill -> evaluate in one command."""

from __future__ import annotations

from typing import Annotated

import typer

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
    LogOpt,
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
    with_loggers,
)
from mrd_cli.cli.plot import PlotsOpt, check_plots_extra, draw_plots
from mrd_cli.cli.pretrain import BackboneOpt, TextBackboneOpt
from mrd_cli.cli.progress import epoch_bars
from mrd_cli.cli.protocol_gap import ProtocolGapOpt, warn_missing_gap
from mrd_cli.cli.render import print_evaluation, timings_table
from mrd_cli.cli.session import open_executor, open_session
from mrd_cli.core.timing import StepTimer
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.evaluate import evaluate, metrics_path
from mrd_cli.recipes.partition import ensure_partitioned


@handle_errors
def run(
    dataset: DatasetOpt = "synthetic",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Redo every step even if its outputs are current, and replace pretrained "
            "checkpoints made with other settings (kept otherwise).",
        ),
    ] = False,
    backbone: BackboneOpt = None,
    text_backbone: TextBackboneOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    no_confusion: Annotated[
        bool, typer.Option("--no-confusion", help="Do not print the confusion matrices.")
    ] = False,
    threads: ThreadsOpt = None,
    no_early_stop: NoEarlyStopOpt = False,
    executor: ExecutorOpt = ExecutorKind.local,
    address: AddressOpt = None,
    plots: PlotsOpt = False,
    log: LogOpt = None,
    json_out: JsonOpt = False,
    protocol_gap: ProtocolGapOpt = False,
    debug: DebugOpt = False,
) -> None:
    """The whole pipeline: pretrain, partition, distill, evaluate on the test split.

    Pretrained checkpoints and the partition are reused when they match the data and config
    (use --force to redo them). With --executor processes or ray the cross-fitted
    partition's fold models of each role run as one unit (a worker process or a Ray task;
    the two roles side by side).
    """
    check_plots_extra(plots)
    timer = StepTimer()
    overrides = training_overrides(
        {"seed": seed, "model": {"backbone": backbone, "text_backbone": text_backbone}},
        threads,
        no_early_stop,
    )
    overrides = with_loggers(overrides, log)
    with timer.step("load"):
        session = open_session(
            dataset, config, data_dir, run_dir, device, overrides, quiet=json_out
        )
        session.protocol_gap = protocol_gap
    err_console.print(
        f"[bold]mrd run[/] on {shown(session.corpus.name)}: {session.corpus.num_utterances('train')} train / "
        f"{session.corpus.num_utterances('val')} val / {session.corpus.num_utterances('test')} test "
        f"utterances, device {session.device}, run directory {shown(session.run.root)}"
    )
    with open_executor(executor, address, session) as runner, epoch_bars() as bars:
        ensure_partitioned(
            session,
            force=force,
            on_event=bars,
            timer=timer,
            executor=runner,
        )
        err_console.print("[bold]step:[/] distill")
        bars.add("distill", "distill", session.cfg.distill.epochs)
        with timer.step("distill"):
            distill(session, on_event=bars)
    with timer.step("evaluate"):
        result = evaluate(session).to_dict()
    if protocol_gap:
        warn_missing_gap(result)
    result["timings"] = timer.to_dict()
    path = metrics_path(session, "test")
    if plots:
        result["plots"] = draw_plots(session.run.root, json_out)
    if json_out:
        print_json(result)
        return
    console = out_console()
    print_evaluation(console, result, confusion=not no_confusion)
    console.print(timings_table(result["timings"], "mrd run: wall time per step"))
    err_console.print(f"Saved to {shown(path)}")

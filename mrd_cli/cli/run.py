"""`mrd run`: pretrain -> partition -> distill -> evaluate in one command."""

from __future__ import annotations

from typing import Annotated

import typer

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.options import BACKBONE_KEYS, BackboneOpt, RunOptions, TextBackboneOpt, command

NoConfusionOpt = Annotated[
    bool, typer.Option("--no-confusion", help="Do not print the confusion matrices.")
]


@command("session", "log", "training", "protocol_gap", "executor", "plots", keys=BACKBONE_KEYS)
def run(
    opts: RunOptions,
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
    no_confusion: NoConfusionOpt = False,
) -> None:
    """The whole pipeline: pretrain, partition, distill, evaluate on the test split.

    Pretrained checkpoints and the partition are reused when they match the data and config
    (use --force to redo them). With --executor processes or ray the cross-fitted
    partition's fold models of each role run as one unit (a worker process or a Ray task;
    the two roles side by side).
    """
    from mrd_cli.cli.plot import check_plots_extra, draw_plots
    from mrd_cli.cli.progress import epoch_bars
    from mrd_cli.cli.render import print_evaluation, timings_table
    from mrd_cli.cli.session import open_executor, open_session
    from mrd_cli.core.timing import StepTimer
    from mrd_cli.recipes.distill import distill
    from mrd_cli.recipes.evaluate import evaluate, metrics_path
    from mrd_cli.recipes.partition import ensure_partitioned

    check_plots_extra(opts.plots)
    timer = StepTimer()
    with timer.step("load"):
        session = open_session(opts)
    err_console.print(
        f"[bold]mrd run[/] on {shown(session.corpus.name)}: {session.corpus.num_utterances('train')} train / "
        f"{session.corpus.num_utterances('val')} val / {session.corpus.num_utterances('test')} test "
        f"utterances, device {session.device}, run directory {shown(session.run.root)}"
    )
    with open_executor(opts, session) as runner, epoch_bars() as bars:
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
    if opts.protocol_gap:
        from mrd_cli.cli.protocol_gap import warn_missing_gap

        warn_missing_gap(result)
    result["timings"] = timer.to_dict()
    path = metrics_path(session, "test")
    if opts.plots:
        result["plots"] = draw_plots(session.run.root, opts.json_out)
    if opts.json_out:
        print_json(result)
        return
    console = out_console()
    print_evaluation(console, result, confusion=not no_confusion)
    console.print(timings_table(result["timings"], "mrd run: wall time per step"))
    err_console.print(f"Saved to {shown(path)}")

"""`mrd tune`: Optuna search over the distillation config on validation W-F1."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mrd_cli.cli.common import (
    err_console,
    out_console,
    print_json,
    shown,
    was_terminated,
)
from mrd_cli.cli.options import RunOptions, command

if TYPE_CHECKING:
    from mrd_cli.core.events import Event


class Target(str, Enum):
    text = "text"
    multi = "multi"
    both = "both"


@command("session", "training", "executor", "plots")
def tune(
    opts: RunOptions,
    trials: Annotated[
        int,
        typer.Option(
            "--trials",
            min=1,
            help="Finished trials the study should hold in total (all processes).",
        ),
    ] = 20,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds", min=1, help="Distillation seeds per trial (the value is their mean)."
        ),
    ] = 1,
    target: Annotated[
        Target,
        typer.Option(
            "--target", help="Model(s) whose validation W-F1 is maximised (both: the mean)."
        ),
    ] = Target.text,
    space: Annotated[
        Path | None,
        typer.Option(
            "--space", help="Search space YAML (default: the built-in configs/tune_space.yaml)."
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="SQLAlchemy URL of the study storage (default: sqlite:///RUN/tune/study.db).",
        ),
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default: <dataset>-<target>).")
    ] = None,
    prune: Annotated[
        bool,
        typer.Option("--prune/--no-prune", help="Stop unpromising trials early (MedianPruner)."),
    ] = True,
    prune_startup: Annotated[
        int,
        typer.Option(
            "--prune-startup", min=0, help="Complete trials before the pruner starts to prune."
        ),
    ] = 5,
    prune_warmup: Annotated[
        int,
        typer.Option(
            "--prune-warmup",
            min=0,
            help="Epochs of the first seed during which a trial is never pruned.",
        ),
    ] = 1,
    top: Annotated[int, typer.Option("--top", min=1, help="Trials shown in the table.")] = 10,
) -> None:
    """Search the distillation config on validation W-F1 (Optuna: TPE, median pruning).

    Pretrains and partitions first unless current outputs are in the run directory, then
    distils the pair once per trial and seed into RUN/tune/<study>/trials/<n>/. The study
    lives in RUN/tune/study.db (or --storage): rerun the same command to continue after
    Ctrl-C, or start it in several processes at once. Writes the best config to
    RUN/tune/<study>/best.yaml, for `mrd distill --config`. Test labels are never read.

    With --executor processes or ray, one worker per slot (this machine's or the cluster's
    CPUs / executor.cpus_per_task) runs trials against the same storage: on a cluster, give a --storage every machine
    reaches (e.g. postgresql://...). The trials' directories are written by this command.
    """
    from mrd_cli.cli.plot import check_plots_extra, draw_plots
    from mrd_cli.cli.progress import epoch_bars
    from mrd_cli.cli.session import open_executor, open_session
    from mrd_cli.recipes.tune import require_optuna
    from mrd_cli.recipes.tune import tune as tune_recipe

    optuna = require_optuna()
    check_plots_extra(opts.plots)
    # Failed trials are reported in the table, not as optuna's log lines with tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Not locked for the whole command: several `mrd tune` processes share a run directory
    # (each trial writes only its own directory); the recipe locks it while it pretrains.
    session = open_session(opts, lock=False)
    err_console.print(
        f"[bold]mrd tune[/] on {shown(session.corpus.name)}: {trials} trials x {seeds} seed(s), "
        f"target {target.value} (validation W-F1), device {session.device}, "
        f"run directory {shown(session.run.root)}"
    )
    # Ctrl-C and SIGTERM (a scheduler preempting the job; ``cli/app.py`` raises it as
    # ``Terminated``) end the running trial the same way: failed and queued again at once.
    try:
        with open_executor(opts, session) as runner, epoch_bars() as bars:
            bars.add("trials", "trials", trials)

            def on_epoch(event: Event) -> None:
                key = event.task
                if key.startswith("trial "):
                    if "distill" not in bars.tasks:
                        bars.add("distill", key, event.log.epochs)
                    bars.rename("distill", key)
                    key = "distill"
                bars.update(key, event.log)

            def on_trial(event: Event) -> None:
                row, counts = event.payload["row"], event.payload["counts"]
                if row["state"] == "fail" and row["error"]:
                    err_console.print(
                        f"[yellow]Trial {row['number']} failed:[/] {shown(row['error'])}"
                    )
                value = row["value"] if row["value"] is not None else row["best_intermediate"]
                score = "" if value is None else f" ({value:.2f})"
                bars.advance(
                    "trials", counts["finished"], f"trial {row['number']} {row['state']}{score}"
                )

            def on_wait(event: Event) -> None:
                counts = event.payload["counts"]
                bars.advance(
                    "trials",
                    counts["finished"],
                    f"waiting for {counts['running']} trial(s) running elsewhere",
                )

            bars.handle("epoch", on_epoch)
            bars.handle("trial", on_trial)
            bars.handle("wait", on_wait)
            result = tune_recipe(
                session,
                trials=trials,
                seeds=seeds,
                target=target.value,
                space=space,
                storage=storage,
                study_name=study,
                prune=prune,
                prune_startup=prune_startup,
                prune_warmup=prune_warmup,
                on_event=bars,
                executor=runner,
            )
            bars.advance("trials", trials, "done")
    except KeyboardInterrupt as exc:
        if opts.debug:
            raise
        terminated = was_terminated(exc)
        what = "Terminated" if terminated else "Interrupted"
        err_console.print(
            f"[yellow]{what}.[/] Finished trials are kept in the study; the interrupted "
            "trial is queued again. Rerun the same command to continue."
        )
        raise typer.Exit(143 if terminated else 130) from None
    summary = result.to_dict()
    if opts.plots:
        summary["plots"] = draw_plots(session.run.root, opts.json_out)
    if opts.json_out:
        print_json(summary)
        return
    console = out_console()
    console.print(trials_table(summary, top))
    console.print(importance_table(summary))
    if result.best_config:
        err_console.print(
            f"Best config (trial {summary['best']['number']}) -> {shown(result.best_config)}\n"
            f"Score it once on test: mrd distill --config {shown(result.best_config)} ... "
            "then mrd evaluate."
        )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(summary: dict[str, Any], top: int) -> Table:
    rows = summary["trials"][:top]
    keys = list(summary["trials"][0]["params"]) if summary["trials"] else []
    for row in rows:
        keys += [k for k in row["params"] if k not in keys]
    c = summary["counts"]
    table = Table(
        title=f"Study '{shown(summary['study'])}' on {shown(summary['dataset'])}: top {len(rows)} of "
        f"{c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed trials "
        f"(validation W-F1 of {summary['target']}, mean over seeds {summary['seeds']})",
        title_justify="left",
    )
    if summary.get("pretrained_value") is not None:
        table.caption = (
            f"The pretrained pair scores {summary['pretrained_value']:.2f} on validation: the "
            "bar a trial has to beat. Values are each model's best distillation epoch."
        )
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column("val W-F1", justify="right")
    table.add_column("epochs run", justify="right")
    for key in keys:
        # A tuned key keeps its section when its short name would repeat a column's.
        short = key.removeprefix("distill.")
        table.add_column(key if short in ("epochs", "state") else short, justify="right")
    best = (summary["best"] or {}).get("number")
    for row in rows:
        value = row["value"]
        score = (
            f"{value:.2f}"
            if value is not None
            else (
                f"({row['best_intermediate']:.2f})" if row["best_intermediate"] is not None else ""
            )
        )
        epochs = f"{row['epochs_run']}/{row['epochs_planned']}" if row["epochs_planned"] else ""
        table.add_row(
            str(row["number"]),
            row["state"],
            score,
            epochs,
            *[shown(_fmt(row["params"].get(k, ""))) for k in keys],
            style="bold" if row["number"] == best else None,
        )
    return table


def importance_table(summary: dict[str, Any]) -> Table:
    table = Table(title="Parameter importances (Optuna's default evaluator)", title_justify="left")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    if summary["importances"] is None:
        table.add_row(f"n/a: {shown(summary['importance_note'])}", "")
        return table
    for key, value in summary["importances"].items():
        table.add_row(shown(key), f"{value:.3f}")
    if summary["importance_note"]:
        table.caption = f"Note: {shown(summary['importance_note'])}"
    return table

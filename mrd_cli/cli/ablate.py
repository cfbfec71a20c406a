"""`mrd ablate`: MRD vs MRD without MIC / ILC / RCL over several seeds (paper Table 5)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.distill import WithoutOpt
from mrd_cli.cli.options import (
    BACKBONE_KEYS,
    BackboneOpt,
    RunOptions,
    TextBackboneOpt,
    command,
    config_default,
)


@command(
    "session",
    "training",
    "protocol_gap",
    "executor",
    "plots",
    keys={"seeds": "ablate.seeds", "repretrain": "ablate.repretrain", **BACKBONE_KEYS},
)
def ablate(
    opts: RunOptions,
    without: WithoutOpt = None,
    seeds: Annotated[
        int | None,
        typer.Option("--seeds", min=1, help=f"Number of seeds ({config_default('ablate.seeds')})."),
    ] = None,
    repretrain: Annotated[
        bool | None,
        typer.Option(
            "--repretrain/--reuse-pretrained",
            help="Pretrain and partition anew for every seed, or reuse one pretrained pair "
            f"({config_default('ablate.repretrain')}).",
        ),
    ] = None,
    backbone: BackboneOpt = None,
    text_backbone: TextBackboneOpt = None,
) -> None:
    """Ablation table: MRD vs MRD without MIC / ILC / RCL over several seeds.

    Runs full MRD and each variant named with --without (all three when none is named) over
    N seeds; prints per-class F1 and W-F1 as mean ± std, each variant's difference from MRD
    with a paired t-test over seeds and a paired bootstrap interval over test utterances.

    Results go to RUN/ablation/results.json and results.csv; finished (variant, seed) cells
    are reused when the command is run again. With --executor processes or ray the
    cells (and the cross-fitted partition's fold models) run side by side, in worker
    processes or as Ray tasks; this command alone writes the run directory.
    """
    from mrd_cli.cli.plot import check_plots_extra, draw_plots
    from mrd_cli.cli.progress import epoch_bars
    from mrd_cli.cli.protocol_gap import print_gap
    from mrd_cli.cli.render import timings_table
    from mrd_cli.cli.session import open_executor, open_session
    from mrd_cli.core.timing import StepTimer
    from mrd_cli.recipes.ablate import COMPONENTS
    from mrd_cli.recipes.ablate import ablate as ablate_recipe

    check_plots_extra(opts.plots)
    timer = StepTimer()
    with timer.step("load"):
        session = open_session(opts)
    comps = [c.value for c in without] if without else list(COMPONENTS)
    variants = [(c,) for c in comps]
    a = session.cfg.ablate
    err_console.print(
        f"Ablation on {shown(session.corpus.name)}: MRD and without {', '.join(c.upper() for c in comps)}, "
        f"{a.seeds} seeds; "
        + (
            "each seed pretrains and partitions anew."
            if a.repretrain
            else "one pretrained pair and partition are reused by every seed."
        )
    )
    total = a.seeds * (len(variants) + 1)
    with open_executor(opts, session) as runner, epoch_bars() as bars:
        bars.add_cells("ablation cells", total)
        summary = ablate_recipe(
            session, variants, a.seeds, on_event=bars, timer=timer, executor=runner
        )
        bars.finish_cells()
    summary = summary.to_dict()
    if opts.plots:
        summary["plots"] = draw_plots(session.run.root, opts.json_out)
    if opts.json_out:
        print_json(summary)
        return
    console = out_console()
    console.print(ablation_table(summary))
    print_gap(console, None, summary)
    console.print(timings_table(summary["timings"], "mrd ablate: wall time per step"))
    err_console.print(f"Saved to {shown(session.run.ablation / 'results.json')} and results.csv")


def ablation_table(summary: dict[str, Any]) -> Table:
    labels = summary["labels"]
    n = len(summary["seeds"])
    table = Table(
        title=f"Ablation on {shown(summary['dataset'])} (test split, percent, mean ± std over {n} seeds; "
        f"{'re-pretrained per seed' if summary['repretrain'] else 'one pretrained pair'}; "
        + (
            "pretrained weights kept where no distillation epoch beat them on validation"
            if summary.get("keep_start")
            else "best distillation epoch, even below the pretrained model"
        )
        + ")",
        title_justify="left",
    )
    table.add_column("model")
    for lab in labels:
        table.add_column(shown(lab), justify="right")
    table.add_column("W-F1", justify="right")
    table.add_column("Δ W-F1 (vs)", justify="right")
    table.add_column("p (paired t)", justify="right")
    table.add_column("bootstrap 95% CI (p)", justify="right")
    table.add_column("kept pretrained", justify="right")
    for row in summary["rows"]:
        cells = [
            f"{row['per_class_f1'][lab]['mean']:.2f} ± {row['per_class_f1'][lab]['std']:.2f}"
            for lab in labels
        ]
        w = row["weighted_f1"]
        cells.append(f"{w['mean']:.2f} ± {w['std']:.2f}")
        if "delta_wf1" in row:
            cells.append(f"{row['delta_wf1']:+.2f} ({row.get('vs', 'MRD')})")
            p = row["p_paired_t"]
            cells.append("n/a" if p is None else f"{p:.3f}")
            lo, hi = row["bootstrap_ci95"]
            cells.append(
                "n/a" if lo is None else f"[{lo:+.2f}, {hi:+.2f}] ({row['p_bootstrap']:.3f})"
            )
        else:
            cells += ["", "", ""]
        kept = row.get("kept_pretrained")
        cells.append("" if kept is None else f"{kept}/{n}")
        style = (
            "bold" if row["name"] == "MRD" else ("dim" if row["variant"] == "pretrained" else None)
        )
        table.add_row(shown(row["name"]), *cells, style=style)
    return table

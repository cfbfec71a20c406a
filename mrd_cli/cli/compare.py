"""`mrd compare`: M_multi's (or M_text's) backbones on the same data over seeds."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.options import RunOptions, command, config_default, epochs_option
from mrd_cli.errors import MRDError

EpochsOpt = epochs_option("pretrain.epochs")


@command(
    "session",
    "training",
    "protocol_gap",
    "executor",
    keys={"seeds": "ablate.seeds", "epochs": "pretrain.epochs"},
)
def compare(
    opts: RunOptions,
    backbones: Annotated[
        str,
        typer.Option(
            "--backbones",
            help="Comma-separated backbones: dialogue, foal (Foal-Net), dual (DUAL; its losses "
            "and sizes are mrd's own choices, as no paper or code defines them), semi, m3net "
            "(M3Net). With --role text: dialogue and m3net.",
        ),
    ] = "dialogue,foal,dual",
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="Whose backbone varies: multi (M_multi, model.backbone) or text (M_text on the "
            "text alone, model.text_backbone).",
        ),
    ] = "multi",
    seeds: Annotated[
        int | None,
        typer.Option("--seeds", min=1, help=f"Number of seeds ({config_default('ablate.seeds')})."),
    ] = None,
    epochs: EpochsOpt = None,
) -> None:
    """Compare M_multi's (or, with --role text, M_text's) backbones: test W-F1 over seeds.

    Pretrains the multimodal model with each backbone and seed (same data, loss, schedule;
    each epoch chosen on validation W-F1), scores it on the test split, and prints W-F1 as
    mean ± std with each backbone's difference from the dialogue network (a paired t-test
    over seeds and a paired bootstrap over test utterances), the majority-class W-F1, and
    each loss term at the first and last epoch. A backbone the data cannot feed (Foal-Net or
    DUAL without audio and visual features) is listed as not run.

    Results go to RUN/compare/results.json; finished (backbone, seed) cells are reused when
    the command is run again. With --executor processes or ray the cells run side
    by side, in worker processes or as Ray tasks; this command alone writes the run directory.
    """
    names = [b.strip() for b in backbones.split(",") if b.strip()]
    if role not in ("multi", "text"):
        raise MRDError(f"--role must be multi or text, got '{role}'.")
    from mrd_cli.cli.progress import epoch_bars
    from mrd_cli.cli.protocol_gap import print_gap
    from mrd_cli.cli.session import open_executor, open_session
    from mrd_cli.recipes.compare import compare as compare_recipe

    session = open_session(opts)
    n = session.cfg.ablate.seeds
    err_console.print(
        f"Comparing backbones {shown(', '.join(names))} on {shown(session.corpus.name)}, {n} seeds, "
        f"{session.cfg.pretrain.epochs} pretraining epochs each, device {session.device}."
    )
    total = n * len(names)
    with open_executor(opts, session) as runner, epoch_bars() as bars:
        bars.add_cells("compare cells", total)
        result = compare_recipe(session, names, n, on_event=bars, executor=runner, role=role)
        bars.finish_cells()
    summary = result.to_dict()
    if opts.json_out:
        print_json(summary)
        return
    out_console().print(comparison_table(summary))
    print_gap(out_console(), None, summary)
    for name, why in summary["not_run"].items():
        err_console.print(f"[yellow]Not run:[/] {shown(name)}: {shown(why)}")
    err_console.print(f"Saved to {shown(session.run.root / 'compare' / 'results.json')}")


def comparison_table(summary: dict[str, Any]) -> Table:
    n = len(summary["seeds"])
    table = Table(
        title=f"Backbones of M_{shown(summary.get('role', 'multi'))} on "
        f"{shown(summary['dataset'])} (test W-F1, percent, mean ± std over "
        f"{n} seeds; epochs chosen on validation; majority class "
        f"{summary['majority_weighted_f1']:.2f})",
        title_justify="left",
    )
    table.add_column("backbone")
    table.add_column("W-F1", justify="right")
    table.add_column(f"Δ vs {shown(summary['reference'])}", justify="right")
    table.add_column("p (paired t)", justify="right")
    table.add_column("bootstrap 95% CI (p)", justify="right")
    table.add_column("loss terms, first -> last epoch")
    for row in summary["rows"]:
        w = row["weighted_f1"]
        cells = [f"{w['mean']:.2f} ± {w['std']:.2f}"]
        if "delta_wf1" in row:
            p = row["p_paired_t"]
            lo, hi = row["bootstrap_ci95"]
            cells += [
                f"{row['delta_wf1']:+.2f}",
                "n/a" if p is None else f"{p:.3f}",
                "n/a" if lo is None else f"[{lo:+.2f}, {hi:+.2f}] ({row['p_bootstrap']:.3f})",
            ]
        else:
            cells += ["(reference)", "", ""]
        first, last = row["losses_first_epoch"], row["losses_last_epoch"]
        cells.append(
            " ".join(
                f"{k} {first[k]:.3g}->{last[k]:.3g}" for k in first if k not in ("total", "reg")
            )
        )
        table.add_row(shown(row["backbone"]), *cells)
    for name in summary["not_run"]:
        table.add_row(
            shown(name), "not run", "", "", "", "needs audio and visual features", style="dim"
        )
    return table

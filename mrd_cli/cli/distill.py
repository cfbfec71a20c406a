"""`mrd distill`: MRD (MIC + ILC + RCL) on the pretrained pair."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from mrd_cli.cli.common import err_console, report_selected, shown
from mrd_cli.cli.options import RunOptions, command, config_default, epochs_option


class Component(str, Enum):
    mic = "mic"
    ilc = "ilc"
    rcl = "rcl"


class CurriculumChoice(str, Enum):
    reverse = "reverse"
    forward = "forward"
    none = "none"


WithoutOpt = Annotated[
    list[Component] | None,
    typer.Option(
        "--without",
        help="Switch a component off (repeatable): mic (alpha = beta = 0), ilc (gamma = delta "
        "= 0), rcl (no curriculum).",
    ),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run from its last finished epoch.")
]


def _switched_off(without: list[Component]) -> dict[str, Any]:
    from mrd_cli.recipes.ablate import without_values

    return without_values(c.value for c in without)


EpochsOpt = epochs_option("distill.epochs")


@command(
    "session",
    "log",
    "training",
    "protocol_gap",
    keys={"epochs": "distill.epochs", "curriculum": "distill.curriculum", "without": _switched_off},
)
def distill(
    opts: RunOptions,
    without: WithoutOpt = None,
    curriculum: Annotated[
        CurriculumChoice | None,
        typer.Option(
            "--curriculum",
            help=f"reverse (RCL), forward, or none ({config_default('distill.curriculum')}).",
        ),
    ] = None,
    epochs: EpochsOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Distil the pretrained models into each other (MRD: MIC + ILC + RCL).

    Each model's epoch is chosen on its own validation W-F1, with its pretrained weights as a candidate (epoch 0): a distillation epoch replaces them only if a bootstrap over validation dialogues is sure of the gain (distill.keep_start, distill.start_confidence). Writes RUN/distill/multi.pt and RUN/distill/text.pt.
    """
    from mrd_cli.cli.progress import epoch_bars
    from mrd_cli.cli.session import open_session
    from mrd_cli.recipes.distill import distill as distill_recipe

    session = open_session(opts)
    d = session.cfg.distill
    err_console.print(
        f"Distilling on {shown(session.corpus.name)} ({session.device}): alpha={d.alpha} beta={d.beta} "
        f"gamma={d.gamma} delta={d.delta} T={d.temperature} curriculum={d.curriculum}."
    )
    with epoch_bars() as bars:
        bars.add("distill", "distill", d.epochs)
        result = distill_recipe(session, resume=resume, on_event=bars)
    report_selected(result, opts.json_out)

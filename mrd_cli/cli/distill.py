"""`mrd distill`: MRD (MIC + ILC + RCL) on the pretrained pair."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from mrd_cli.cli.common import (
    ConfigOpt,
    DataDirOpt,
    DatasetOpt,
    DebugOpt,
    DeviceOpt,
    EpochsOpt,
    JsonOpt,
    LogOpt,
    NoEarlyStopOpt,
    RunDirOpt,
    SeedOpt,
    ThreadsOpt,
    err_console,
    handle_errors,
    report_selected,
    shown,
    training_overrides,
    with_loggers,
)
from mrd_cli.cli.progress import epoch_bars
from mrd_cli.cli.protocol_gap import ProtocolGapOpt
from mrd_cli.cli.session import open_session
from mrd_cli.recipes.ablate import apply_without
from mrd_cli.recipes.distill import distill as distill_recipe


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


@handle_errors
def distill(
    dataset: DatasetOpt = "synthetic",
    without: WithoutOpt = None,
    curriculum: Annotated[
        CurriculumChoice | None,
        typer.Option("--curriculum", help="reverse (RCL), forward, or none (default: config)."),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    epochs: EpochsOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last epoch.")
    ] = False,
    threads: ThreadsOpt = None,
    no_early_stop: NoEarlyStopOpt = False,
    log: LogOpt = None,
    json_out: JsonOpt = False,
    protocol_gap: ProtocolGapOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Distil the pretrained models into each other (MRD: MIC + ILC + RCL).

    Each model's epoch is chosen on its own validation W-F1, with its pretrained weights as a candidate (epoch 0): a distillation epoch replaces them only if a bootstrap over validation dialogues is sure of the gain (distill.keep_start, distill.start_confidence). Writes RUN/distill/multi.pt and RUN/distill/text.pt.
    """
    overrides = {
        "seed": seed,
        "distill": {
            "epochs": epochs,
            "curriculum": curriculum.value if curriculum else None,
        },
    }
    overrides = training_overrides(overrides, threads, no_early_stop)
    overrides = with_loggers(overrides, log)
    session = open_session(dataset, config, data_dir, run_dir, device, overrides, quiet=json_out)
    session.protocol_gap = protocol_gap
    session.cfg = apply_without(session.cfg, [c.value for c in without or []])
    d = session.cfg.distill
    err_console.print(
        f"Distilling on {shown(session.corpus.name)} ({session.device}): alpha={d.alpha} beta={d.beta} "
        f"gamma={d.gamma} delta={d.delta} T={d.temperature} curriculum={d.curriculum}."
    )
    with epoch_bars() as bars:
        bars.add("distill", "distill", d.epochs)
        result = distill_recipe(session, resume=resume, on_event=bars)
    report_selected(result, json_out)

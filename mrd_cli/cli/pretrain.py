"""`mrd pretrain`: supervised pretraining of the multimodal and the text model."""

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
    training_overrides,
    with_loggers,
)
from mrd_cli.cli.progress import epoch_bars
from mrd_cli.cli.protocol_gap import ProtocolGapOpt
from mrd_cli.cli.session import open_session
from mrd_cli.recipes.pretrain import pretrain as pretrain_recipe


class Modality(str, Enum):
    multi = "multi"
    text = "text"
    both = "both"


BackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--backbone",
        help="M_multi's network: dialogue (mrd's dialogue network), foal (Foal-Net: audio + "
        "visual; text too with model.foal.text, mrd's extension) or dual (DUAL: audio + "
        "visual, text at its decoder; its differences run across a dialogue's utterances, "
        "turns rather than frames, and its losses and sizes are mrd's own choices, as no "
        "paper or code defines them) or semi (MER2024-SEMI: per-modality heads and a fused "
        "head, soft-voted; `mrd selftrain` trains it with few labels) or m3net (M3Net: "
        "multimodal hypergraph and high/low-frequency graph filtering; its departures from the "
        "published code are in docs/backbones.md and each run's JSON). M_text's network is "
        "--text-backbone. Default: config model.backbone.",
    ),
]

TextBackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--text-backbone",
        help="M_text's network, on the text alone: dialogue (mrd's dialogue network) or m3net "
        "(M3Net with one node per utterance). Default: config model.text_backbone.",
    ),
]

ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run from its last finished epoch.")
]


@handle_errors
def pretrain(
    dataset: DatasetOpt = "synthetic",
    modality: Annotated[
        Modality, typer.Option("--modality", help="Which model to train: multi, text or both.")
    ] = Modality.both,
    backbone: BackboneOpt = None,
    text_backbone: TextBackboneOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    epochs: EpochsOpt = None,
    resume: ResumeOpt = False,
    threads: ThreadsOpt = None,
    no_early_stop: NoEarlyStopOpt = False,
    log: LogOpt = None,
    json_out: JsonOpt = False,
    protocol_gap: ProtocolGapOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Pretrain M_multi and M_text; the epoch is chosen by validation W-F1.

    Writes RUN/pretrain/multi.pt and RUN/pretrain/text.pt.
    """
    overrides = training_overrides(
        {
            "seed": seed,
            "model": {"backbone": backbone, "text_backbone": text_backbone},
            "pretrain": {"epochs": epochs},
        },
        threads,
        no_early_stop,
    )
    overrides = with_loggers(overrides, log)
    session = open_session(dataset, config, data_dir, run_dir, device, overrides)
    session.protocol_gap = protocol_gap
    roles = ("multi", "text") if modality == Modality.both else (modality.value,)
    err_console.print(
        f"Pretraining {', '.join(roles)} on [bold]{session.corpus.name}[/] "
        f"({session.corpus.num_utterances('train')} train / {session.corpus.num_utterances('val')} "
        f"val utterances; val: {session.corpus.val_source}) on {session.device}, "
        f"seed {session.cfg.seed}, M_multi backbone {session.cfg.model.backbone}, M_text backbone "
        f"{session.cfg.model.text_backbone}."
    )
    with epoch_bars() as bars:
        for role in roles:
            bars.add(role, f"pretrain {role}", session.cfg.pretrain.epochs)
        result = pretrain_recipe(session, roles, resume=resume, on_event=bars)
    report_selected(result, json_out)

"""`mrd pretrain`: supervised pretraining of the multimodal and the text model."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from mrd_cli.cli.common import err_console, report_selected
from mrd_cli.cli.distill import ResumeOpt
from mrd_cli.cli.options import (
    BACKBONE_KEYS,
    BackboneOpt,
    RunOptions,
    TextBackboneOpt,
    command,
    epochs_option,
)


class Modality(str, Enum):
    multi = "multi"
    text = "text"
    both = "both"


EpochsOpt = epochs_option("pretrain.epochs")


@command(
    "session",
    "log",
    "training",
    "protocol_gap",
    keys={**BACKBONE_KEYS, "epochs": "pretrain.epochs"},
)
def pretrain(
    opts: RunOptions,
    modality: Annotated[
        Modality, typer.Option("--modality", help="Which model to train: multi, text or both.")
    ] = Modality.both,
    backbone: BackboneOpt = None,
    text_backbone: TextBackboneOpt = None,
    epochs: EpochsOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Pretrain M_multi and M_text; the epoch is chosen by validation W-F1.

    Writes RUN/pretrain/multi.pt and RUN/pretrain/text.pt.
    """
    from mrd_cli.cli.progress import epoch_bars
    from mrd_cli.cli.session import open_session
    from mrd_cli.recipes.pretrain import pretrain as pretrain_recipe

    session = open_session(opts, quiet=False)
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
    report_selected(result, opts.json_out)

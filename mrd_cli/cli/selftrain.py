"""`mrd selftrain`: MER2024-SEMI with few labels (label budget, contrastive pretraining,
supervised training with soft voting, self-training rounds)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.options import RunOptions, command, config_default, epochs_option

EpochsOpt = epochs_option("selftrain.epochs")


class Role(str, Enum):
    multi = "multi"
    text = "text"


def _transductive(on: bool) -> dict[str, Any]:
    return {"selftrain.transductive": True} if on else {}


@command(
    "session",
    "log",
    "seed",
    "threads",
    keys={
        "labeled_fraction": "selftrain.labeled_fraction",
        "transductive": _transductive,
        "rounds": "selftrain.rounds",
        "epochs": "selftrain.epochs",
    },
)
def selftrain(
    opts: RunOptions,
    role: Annotated[
        Role,
        typer.Option(
            "--role",
            help="multi: every configured modality (usable as MRD's multimodal model); text: "
            "the text alone (usable as MRD's text model).",
        ),
    ] = Role.multi,
    labeled_fraction: Annotated[
        float | None,
        typer.Option(
            "--labeled-fraction",
            min=0.0,
            max=1.0,
            help="Keep the labels of this share of the training dialogues (whole dialogues, "
            "a draw seeded by --seed); the others form the unlabelled pool. Validation and "
            "test are untouched "
            f"({config_default('selftrain.labeled_fraction')}).",
        ),
    ] = None,
    transductive: Annotated[
        bool,
        typer.Option(
            "--transductive",
            help="Also pseudo-label and train on the TEST split's features (never its labels), "
            "as the original MER2024-SEMI did. Transductive: every output marks the run.",
        ),
    ] = False,
    rounds: Annotated[
        int | None,
        typer.Option(
            "--rounds",
            min=0,
            help="Self-training rounds after the supervised round 0 "
            f"({config_default('selftrain.rounds')}).",
        ),
    ] = None,
    epochs: EpochsOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run: keep its finished rounds and "
            "contrastive phase, continue the interrupted round from its last epoch.",
        ),
    ] = False,
) -> None:
    """Few labels: MER2024-SEMI's contrastive pretraining and self-training.

    Hides the labels of all but --labeled-fraction of the training dialogues, pretrains the
    modality encoders contrastively (NT-Xent between modalities and between original and
    noised features), trains per-modality heads and a fused head with soft voting, then
    pseudo-labels the pool in rounds, accepting an utterance when its voted probability
    exceeds its class's threshold (selftrain.thresholds). Each round reports the accepted
    utterances per class and, as a diagnostic only, their accuracy against the hidden labels.
    Writes RUN/selftrain/<role>.pt (a checkpoint `mrd evaluate` shows) and one checkpoint
    per round under RUN/selftrain/rounds/.
    """
    from mrd_cli.cli.progress import epoch_bars
    from mrd_cli.cli.session import open_session
    from mrd_cli.recipes.selftrain import TRANSDUCTIVE_NOTE
    from mrd_cli.recipes.selftrain import selftrain as selftrain_recipe

    session = open_session(opts)
    st = session.cfg.selftrain
    err_console.print(
        f"Self-training {role.value} on [bold]{shown(session.corpus.name)}[/] with the labels of "
        f"{100 * st.labeled_fraction:.0f}% of the training dialogues, {st.rounds} round(s), "
        f"on {session.device}, seed {session.cfg.seed}."
    )
    if st.transductive:
        err_console.print(f"[yellow]Warning:[/] {TRANSDUCTIVE_NOTE}.", soft_wrap=True)
    with epoch_bars() as bars:
        result = selftrain_recipe(
            session,
            role.value,
            resume=resume,
            on_event=bars,
        )
    if opts.json_out:
        from mrd_cli.core.card import card_path, read_card_fields

        doc = result.to_dict()
        doc["card"] = read_card_fields(card_path(Path(doc["checkpoint"])))  # core/card.py
        print_json(doc)
        return
    out_console().print(rounds_table(result.to_dict(), session.corpus.label_names))
    err_console.print(
        f"[green]✓[/] selftrain {role.value}: round {result.selected_round} "
        f"(selftrain.select: {st.select}) -> {shown(result.checkpoint)}"
    )


def rounds_table(result: dict[str, Any], labels: list[str]) -> Table:
    """One row per round: what it trained on, its validation W-F1, and what it accepted."""
    mode = "TRANSDUCTIVE" if result["transductive"] else "inductive"
    table = Table(
        title=f"mrd selftrain ({result['role']}, {mode}): {result['labelled_dialogues']} "
        f"labelled dialogues, pool of {result['pool_dialogues']} dialogues / "
        f"{result['pool_utterances']} utterances",
        title_justify="left",
    )
    for col in ("round", "supervised utt.", "epoch", "val W-F1", "accepted"):
        table.add_column(col, justify="right")
    for lab in labels:
        table.add_column(shown(lab), justify="right")
    table.add_column("diag. acc. %", justify="right")
    for r in result["rounds"]:
        acc = r.get("accepted") or {}
        by_class = acc.get("by_class", {})
        diag = acc.get("diagnostic_accuracy")
        table.add_row(
            str(r["round"]),
            str(r["supervised_utterances"]),
            str(r["epoch"]),
            f"{r['val_weighted_f1']:.2f}",
            str(acc.get("total", "-")),
            *[str(by_class.get(lab, "-")) for lab in labels],
            "-" if diag is None else f"{diag:.1f}",
        )
    table.caption = (
        "accepted: pool utterances the round's model labelled above threshold, trained on by "
        "the next round. diag. acc.: their accuracy against the hidden labels (a diagnostic; "
        "nothing is chosen by it)."
    )
    return table

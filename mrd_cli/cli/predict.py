"""`mrd predict`: a trained checkpoint on new conversations (CSV transcripts or a feature
file); per-utterance predictions and class probabilities as CSV or JSON, and on screen.

torch and the recipe are imported inside the command, so ``mrd --help`` stays light.
"""

from __future__ import annotations

import csv
import io
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.options import RunOptions, command
from mrd_cli.errors import MRDError

# Rows of the per-utterance table on screen; the output file holds every one.
SHOWN = 40


class Role(str, Enum):
    multi = "multi"
    text = "text"


class Stage(str, Enum):
    pretrain = "pretrain"
    distill = "distill"
    selftrain = "selftrain"


class Format(str, Enum):
    csv = "csv"
    json = "json"


class PredictSplit(str, Enum):
    all = "all"
    train = "train"
    val = "val"
    test = "test"


@command("paths")
def predict(
    opts: RunOptions,
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="CSV transcripts (files or folders of *.csv) in a layout `mrd features` "
            "reads; the label column is optional.",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Checkpoint to run (default: the --role model of the run directory's last "
            "step: distill, else selftrain, else pretrain).",
        ),
    ] = None,
    role: Annotated[
        Role, typer.Option("--role", help="Model of the run directory to run (no --checkpoint).")
    ] = Role.multi,
    stage: Annotated[
        Stage | None,
        typer.Option("--stage", help="Step of the run directory whose model to run."),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="Predict the conversations of this feature file (a dataset YAML) instead of "
            "CSV transcripts.",
        ),
    ] = None,
    split: Annotated[
        PredictSplit,
        typer.Option("--split", help="With --features: which split's dialogues to predict."),
    ] = PredictSplit.all,
    layout: Annotated[
        str | None,
        typer.Option(
            "--layout",
            help="CSV layout: meld, emorynlp or generic (default: the layout the checkpoint's "
            "corpus was read from).",
        ),
    ] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="ROLE=NAME: the CSV column of a role (dialogue, order, speaker, text, label, "
            "audio, ...), repeatable; overrides the layout's name.",
        ),
    ] = None,
    encoding: Annotated[
        str, typer.Option("--encoding", help="Text encoding of the CSV files.")
    ] = "utf-8",
    text_model: Annotated[
        str | None,
        typer.Option(
            "--text-model",
            help="Text encoder directory or cached id (default: the one recorded in the "
            "corpus manifest; another one is refused).",
        ),
    ] = None,
    audio_dir: Annotated[
        Path | None,
        typer.Option("--audio-dir", help="Folder of the utterances' wav files (audio models)."),
    ] = None,
    audio_pattern: Annotated[
        str | None,
        typer.Option(
            "--audio-pattern",
            help="Wav file name under --audio-dir with CSV column names in braces (default: "
            "the corpus manifest's).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the predictions here (.csv or .json; nothing else is written).",
        ),
    ] = None,
    fmt: Annotated[
        Format | None,
        typer.Option("--format", help="Format of --out (default: from its suffix, else csv)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Dialogues per forward pass.")
    ] = 64,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Embedding cache to read (default: $MRD_CACHE_DIR, else ~/.cache/mrd); "
            "predict never writes to it.",
        ),
    ] = None,
) -> None:
    """Predict the emotion of every utterance of new conversations with a trained model.

    --dataset names the corpus the checkpoint was trained on: CSV transcripts are encoded
    with the text encoder, audio feature set and speaker slots recorded in its manifest.
    Example: mrd predict new.csv --dataset data/emorynlp/emorynlp.yaml --run-dir runs/e -o p.csv
    """
    from mrd_cli.cli.session import open_session
    from mrd_cli.features.build import default_cache_dir
    from mrd_cli.recipes.predict import CsvInput, FeatureInput, find_checkpoint
    from mrd_cli.recipes.predict import predict as predict_recipe

    if bool(inputs) == bool(features):
        raise MRDError("Give either CSV transcripts (arguments) or --features DATASET.yaml.")
    kind = (fmt.value if fmt else None) or (
        "json" if out is not None and out.suffix.lower() == ".json" else "csv"
    )
    if out is not None and out.is_dir():
        raise MRDError(f"--out {out} is a directory; name the file to write.")
    session = open_session(opts, read_only_ok=True)
    path = checkpoint or find_checkpoint(session.run, role.value, stage.value if stage else None)
    if features:
        source: Any = FeatureInput(features, split.value)
    else:
        source = CsvInput(
            paths=list(inputs or []),
            layout=layout,
            columns=_columns(column or []),
            encoding=encoding,
            text_model=text_model,
            audio_dir=audio_dir,
            audio_pattern=audio_pattern,
            cache_dir=cache_dir or default_cache_dir(),
        )
    from mrd_cli.cli.progress import EpochBars, make_progress

    progress = make_progress()  # started by the first event: an early error stays one line
    bars = EpochBars(progress)

    def on_event(event: Any) -> None:
        if not progress.live.is_started:
            progress.start()
        bars(event)

    try:
        result = predict_recipe(session, path, source, batch_size, on_event=on_event)
    finally:
        if progress.live.is_started:
            progress.stop()
    if out is not None:
        from mrd_cli.io import atomic_write_text

        atomic_write_text(out, to_json(result) if kind == "json" else to_csv(result))
        result.saved_to = str(out)
    if opts.json_out:
        print_json(result.to_dict())
        return
    _show(result.to_dict())


def _columns(pairs: list[str]) -> dict[str, str]:
    columns = {}
    for pair in pairs:
        role, sep, name = pair.partition("=")
        if not sep or not role.strip():
            raise MRDError(f"--column takes ROLE=NAME (e.g. text=Utterance), got {pair!r}.")
        columns[role.strip()] = name.strip()
    return columns


def to_csv(result: Any) -> str:
    """One row per utterance: ids, speaker, text, true label (may be empty), predicted
    label, then one probability column per class (``p_<class>``)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    head = ["dialogue", "utterance", "speaker", "text", "label", "predicted"]
    writer.writerow(head + [f"p_{n}" for n in result.labels])
    for u in result.utterances:
        writer.writerow(
            [u[k] for k in head] + [f"{u['probabilities'][n]:.6f}" for n in result.labels]
        )
    return buffer.getvalue()


def to_json(result: Any) -> str:
    doc = result.to_dict()
    doc.pop("saved_to", None)
    return json.dumps(doc, indent=2) + "\n"


def _show(doc: dict[str, Any]) -> None:
    from mrd_cli.cli.render import metrics_table

    console = out_console()
    rows = doc["utterances"]
    table = Table(
        title=f"{shown(doc['checkpoint'])} ({doc['stage']} {doc['role']}, "
        f"{shown(doc['backbone'])}) "
        f"— {len(rows)} utterances",
        title_justify="left",
    )
    for name in ("dialogue", "utt", "speaker", "text", "label", "predicted", "p"):
        table.add_column(name, justify="right" if name in ("utt", "p") else "left")
    for u in rows[:SHOWN]:
        p = u["probabilities"][u["predicted"]]
        mark = "" if not u["label"] else (" ✓" if u["label"] == u["predicted"] else " ✗")
        table.add_row(
            shown(u["dialogue"]),
            shown(u["utterance"]),
            shown(u["speaker"]),
            shown(u["text"][:60]),
            shown(u["label"]),
            shown(u["predicted"]) + mark,
            f"{p:.2f}",
        )
    console.print(table)
    if len(rows) > SHOWN:
        where = doc["saved_to"] or "--out FILE"
        console.print(f"… {len(rows) - SHOWN} more utterances in {shown(where)}.")
    if doc["report"]:
        name = f"{doc['stage']}/{doc['role']}"
        console.print(
            metrics_table(
                {
                    "dataset": doc["dataset"],
                    "split": "labelled input",
                    "labels": doc["labels"],
                    "num_utterances": doc["labelled_utterances"],
                    "models": {name: doc["report"]},
                },
                title=f"Scores on the {doc['labelled_utterances']} labelled utterances (percent)",
            )
        )
    if doc["saved_to"]:
        err_console.print(f"Saved to {shown(doc['saved_to'])}", highlight=False)

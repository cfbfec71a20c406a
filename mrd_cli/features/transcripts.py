"""New conversations for ``mrd predict``: CSV files in any layout ``mrd features`` reads,
labels optional, no splits.

The columns are the layout's (or the dataset YAML's ``features.columns``); the label
column may be missing or empty on some rows (those utterances are predicted, not scored).
A split column, when there, is ignored: every dialogue is predicted. The same mistakes
``features/layouts.py`` refuses are refused here (missing column, empty utterance, unknown
label, duplicate utterance id), naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mrd_cli.errors import MRDError
from mrd_cli.features.csvtext import CheckedReader, decode_csv, speakers_of
from mrd_cli.features.layouts import (
    DialogueKey,
    SourceSpec,
    Utterance,
    effective_columns,
    layout_of,
    show_key,
)
from mrd_cli.labels import LabelIndex

# Roles a transcript for prediction must have (the label is optional).
NEEDED = ("dialogue", "order", "speaker", "text")
UNLABELLED = -1


@dataclass
class Transcripts:
    """Dialogues to predict, each a list of utterances in order (label -1: none given)."""

    dialogues: dict[DialogueKey, list[Utterance]]  # key: tuple of the id columns' values
    files: list[str]
    # The folder of the CSV file each dialogue came from (relative audio paths start there).
    folders: dict[DialogueKey, Path] = field(default_factory=dict)

    def utterances(self) -> list[Utterance]:
        return [u for utts in self.dialogues.values() for u in utts]

    @property
    def labelled(self) -> int:
        return sum(u.label != UNLABELLED for u in self.utterances())


def csv_paths(inputs: list[Path]) -> list[Path]:
    """The CSV files of ``inputs`` (files, or folders whose ``*.csv`` are all read)."""
    paths: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(p.glob("*.csv"))
            if not found:
                raise MRDError(f"No *.csv files in {p}.")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise MRDError(f"Input not found: {p}. Pass CSV files or folders holding them.")
    return paths


def read_transcripts(spec: SourceSpec, inputs: list[Path], label_names: list[str]) -> Transcripts:
    """Read and check the CSV files ``inputs`` in ``spec``'s layout; labels are mapped to
    ``label_names`` (the checkpoint's classes)."""
    layout = layout_of(spec.layout)
    columns = effective_columns(spec)
    missing_roles = [r for r in NEEDED if r not in columns]
    if missing_roles:
        raise MRDError(
            f"The {layout.name} layout needs a column for '{missing_roles[0]}'; name it with "
            f"--column {missing_roles[0]}=NAME."
        )
    label_index = LabelIndex(label_names, "the checkpoint's label_names")
    paths = csv_paths(inputs)
    dialogues: dict[DialogueKey, list[Utterance]] = {}
    folders: dict[DialogueKey, Path] = {}
    seen: dict[tuple[DialogueKey, int], str] = {}
    for path in paths:
        reader = CheckedReader(decode_csv(path, spec.encoding), path)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        absent = [c for r in NEEDED for c in columns[r] if c not in header]
        if absent:
            raise MRDError(
                f"{path} lacks the column(s) {', '.join(absent)} of the {layout.name} layout; "
                f"it has: {', '.join(header) or '(no header)'}. Choose the right --layout or "
                "map the columns with --column ROLE=NAME."
            )
        have = {r: c for r, c in columns.items() if all(x in header for x in c)}
        for row in reader:
            where = f"{path.name} line {reader.line_num}"
            if None in row:
                raise MRDError(f"{where} has more fields than the header.")
            if all((v or "").strip() == "" for v in row.values()):
                continue
            row = {k: (v or "") for k, v in row.items()}
            # A tuple, never a joined string (joined, different ids can give one key).
            key: DialogueKey = tuple(row[c].strip() for c in have["dialogue"])
            if not any(key):
                raise MRDError(f"{where}: the dialogue id is empty.")
            if layout.ids_per_file or len(paths) > 1:
                key = (path.stem, *key)  # ids restart per file (MELD) or may collide
            raw_order = row[have["order"][0]].strip()
            try:
                order = int(raw_order)
            except ValueError:
                raise MRDError(
                    f"{where}: the utterance id {raw_order!r} is not an integer; it orders "
                    "the utterances within the dialogue."
                ) from None
            if (key, order) in seen:
                raise MRDError(
                    f"{where}: utterance id {order} of dialogue {show_key(key)} appears twice (first "
                    f"at {seen[(key, order)]})."
                )
            seen[(key, order)] = where
            text = row[have["text"][0]].strip()
            if not text:
                raise MRDError(f"{where}: the utterance is empty; every utterance needs text.")
            label = UNLABELLED
            raw_label = row[have["label"][0]].strip() if "label" in have else ""
            if raw_label:
                found = label_index.get(raw_label, where)
                if found is None:
                    raise MRDError(
                        f"{where}: unknown label {raw_label!r}; the checkpoint's classes are "
                        f"{', '.join(label_names)}. Leave the label empty to predict it."
                    )
                label = found

            def col(role: str, row: dict[str, str] = row, have: dict = have) -> str:
                return row[have[role][0]].strip() if role in have else ""

            folders[key] = path.parent
            dialogues.setdefault(key, []).append(
                Utterance(
                    uid=raw_order,
                    order=order,
                    speakers=speakers_of(row[have["speaker"][0]], where),
                    text=text,
                    label=label,
                    sentiment=-1,
                    fields=row,
                    audio=col("audio"),
                    start=col("start"),
                    end=col("end"),
                    where=where,
                )
            )
    if not dialogues:
        raise MRDError(f"No utterances in {', '.join(str(p) for p in paths)}.")
    for utts in dialogues.values():
        utts.sort(key=lambda u: u.order)
    return Transcripts(dialogues=dialogues, files=[str(p) for p in paths], folders=folders)

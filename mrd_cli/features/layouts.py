"""CSV layouts of conversation transcripts, read into ``Conversations``.

Three layouts: ``meld`` (MELD's ``{train,dev,test}_sent_emo.csv``), ``emorynlp``
(``emorynlp_{train,dev,test}_final.csv``; a dialogue is one (Season, Episode, Scene_ID)) and
``generic`` (any CSV files; the column of each role is named in the dataset YAML). Every
mistake a user can make in these files (missing column, unknown label, empty utterance,
duplicate utterance id, non-UTF-8 bytes, a dialogue in two splits) is refused here, before
anything is encoded or written, with the file and line it comes from.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrd_cli.errors import MRDError
from mrd_cli.features.csvtext import CheckedReader, decode_csv, speakers_of
from mrd_cli.labels import LabelIndex

SPLITS = ("train", "dev", "test")

# Roles a column can play. dialogue may be several columns (EmoryNLP: season, episode, scene).
REQUIRED_ROLES = ("dialogue", "order", "speaker", "text", "label")
OPTIONAL_ROLES = ("split", "sentiment", "start", "end", "audio")
ROLES = REQUIRED_ROLES + OPTIONAL_ROLES

_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
}

# MELD's sentiment classes in the index order of the community files.
SENTIMENT_NAMES = ("neutral", "positive", "negative")


@dataclass(frozen=True)
class CsvLayout:
    """How one CSV layout names its files and columns."""

    name: str
    files: dict[str, str]  # split -> file name in --csv-dir ({} = every *.csv, split column)
    columns: dict[str, str | list[str]]  # role -> column name(s)
    label_names: tuple[str, ...]  # class index order ({} = from the data, sorted)
    # True when dialogue ids restart in every file (MELD): the split is part of the id.
    ids_per_file: bool = False
    # Audio file name under --audio-dir: CSV column names and {split} in braces.
    audio_pattern: str = ""
    about: str = ""


LAYOUTS: dict[str, CsvLayout] = {
    "meld": CsvLayout(
        name="meld",
        files={s: f"{s}_sent_emo.csv" for s in SPLITS},
        columns={
            "dialogue": "Dialogue_ID",
            "order": "Utterance_ID",
            "speaker": "Speaker",
            "text": "Utterance",
            "label": "Emotion",
            "sentiment": "Sentiment",
            "start": "StartTime",
            "end": "EndTime",
        },
        label_names=("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
        ids_per_file=True,
        audio_pattern="{split}/dia{Dialogue_ID}_utt{Utterance_ID}.wav",
        about="MELD: one row per utterance; Dialogue_ID restarts in each split's file.",
    ),
    "emorynlp": CsvLayout(
        name="emorynlp",
        files={s: f"emorynlp_{s}_final.csv" for s in SPLITS},
        columns={
            "dialogue": ["Season", "Episode", "Scene_ID"],
            "order": "Utterance_ID",
            "speaker": "Speaker",
            "text": "Utterance",
            "label": "Emotion",
            "start": "Start_Time",
            "end": "End_Time",
        },
        label_names=("Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared"),
        audio_pattern="{split}/s{Season}_e{Episode}_c{Scene_ID}_u{Utterance_ID}.wav",
        about="EmoryNLP: a dialogue is one (Season, Episode, Scene_ID); Speaker is a list.",
    ),
    "generic": CsvLayout(
        name="generic",
        files={},
        columns={
            "dialogue": "dialogue_id",
            "order": "utterance_id",
            "speaker": "speaker",
            "text": "text",
            "label": "label",
            "split": "split",
            "start": "start_time",
            "end": "end_time",
            "audio": "audio_path",
        },
        label_names=(),
        about="Any CSV: columns named in the dataset YAML (features.columns).",
    ),
}


@dataclass
class Utterance:
    """One row of a transcript, checked."""

    uid: str  # the utterance id as written in the file
    order: int
    speakers: tuple[str, ...]  # one name, or several for a line said together
    text: str
    label: int  # index into Conversations.label_names
    sentiment: int  # index into SENTIMENT_NAMES; -1 when the layout has none
    fields: dict[str, str]  # the raw row (for audio file name patterns)
    audio: str = ""  # audio path from the audio column, as written
    start: str = ""
    end: str = ""
    where: str = ""  # "file.csv line 12", for messages


# A dialogue's key: the values of its id column(s) as a tuple (EmoryNLP: season, episode,
# scene), preceded by the split where ids restart in every file (MELD). Never a joined
# string: joining ('1', '2', '11') and ('1', '21', '1') can give one key for two dialogues.
DialogueKey = tuple[str, ...]


def show_key(key: DialogueKey) -> str:
    """A dialogue key for messages: ('1', '2', '11') -> (1, 2, 11)."""
    return key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"


def key_id(key: DialogueKey) -> str:
    """A dialogue key as one string that no other key gives: the id itself for one id
    column, else the JSON list of the values (``["1", "2", "11"]``)."""
    return key[0] if len(key) == 1 else json.dumps(list(key), ensure_ascii=False)


@dataclass
class Conversations:
    """Dialogues of a corpus in train / dev / test, each a list of utterances in order."""

    name: str
    layout: str
    label_names: list[str]
    dialogues: dict[DialogueKey, list[Utterance]]
    splits: dict[str, list[DialogueKey]]  # split -> dialogue keys, in the order first seen
    files: dict[str, list[str]] = field(default_factory=dict)  # split -> CSV files read
    has_sentiment: bool = False
    # True when the split is the key's first element (ids restart in every file).
    ids_per_file: bool = False
    # Class display name -> the other spellings of it found in the data (merged into it).
    merged_labels: dict[str, list[str]] = field(default_factory=dict)

    def source_id(self, key: DialogueKey) -> list[str]:
        """The dialogue's id column values, as in the CSV."""
        return list(key[1:] if self.ids_per_file else key)

    def utterances(self) -> list[Utterance]:
        """Every utterance in split order (train, dev, test), dialogue by dialogue."""
        return [u for s in SPLITS for d in self.splits[s] for u in self.dialogues[d]]

    def split_of(self) -> dict[DialogueKey, str]:
        return {d: s for s in SPLITS for d in self.splits[s]}


@dataclass
class SourceSpec:
    """What `mrd features` reads: layout, files, column names, labels."""

    layout: str
    csv_dir: Path | None = None
    # split -> file (relative to csv_dir); empty = the layout's names, or every *.csv.
    files: dict[str, str] = field(default_factory=dict)
    columns: dict[str, Any] = field(default_factory=dict)  # overrides of the layout's
    label_names: list[str] = field(default_factory=list)
    encoding: str = "utf-8"


def layout_of(name: str) -> CsvLayout:
    if name not in LAYOUTS:
        close = difflib.get_close_matches(name, list(LAYOUTS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise MRDError(f"Unknown CSV layout '{name}'.{hint} Use one of {', '.join(LAYOUTS)}.")
    return LAYOUTS[name]


def effective_columns(spec: SourceSpec) -> dict[str, list[str]]:
    """role -> column names: the layout's defaults with the spec's overrides applied."""
    layout = layout_of(spec.layout)
    merged: dict[str, Any] = dict(layout.columns)
    for role, value in spec.columns.items():
        if role not in ROLES:
            close = difflib.get_close_matches(str(role), ROLES, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise MRDError(
                f"Unknown column role '{role}' in features.columns.{hint} Roles: "
                f"{', '.join(ROLES)}."
            )
        if value in (None, "", []):
            merged.pop(role, None)  # a role switched off (e.g. no sentiment column)
            continue
        ok = isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        )
        if not ok or (role != "dialogue" and isinstance(value, list)):
            raise MRDError(
                f"features.columns.{role} must be a column name"
                + (" or a list of column names" if role == "dialogue" else "")
                + f", got {value!r}."
            )
        merged[role] = value
    return {r: ([v] if isinstance(v, str) else list(v)) for r, v in merged.items()}


# --------------------------------------------------------------------------------------
# Files


def _csv_files(spec: SourceSpec) -> dict[str, list[Path]]:
    """split -> CSV files; a split of "" means: take each row's split from its column."""
    layout = layout_of(spec.layout)
    if spec.csv_dir is None:
        raise MRDError("Say where the CSV files are: --csv-dir DIR (or features.csv_dir).")
    base = Path(spec.csv_dir)
    if not base.is_dir():
        raise MRDError(f"CSV directory not found: {base}. Check --csv-dir.")
    names = dict(spec.files) or dict(layout.files)
    unknown = set(names) - set(SPLITS)
    if unknown:
        raise MRDError(
            f"features.files may name the splits {', '.join(SPLITS)}, got {sorted(unknown)}."
        )
    if names:
        missing = [s for s in SPLITS if s not in names]
        if missing:
            raise MRDError(
                f"features.files names no file for the {', '.join(missing)} split(s); give one "
                "per split, or leave features.files out and use a split column."
            )
        paths = {s: [base / names[s]] for s in SPLITS}
        absent = [str(p[0]) for p in paths.values() if not p[0].exists()]
        if absent:
            raise MRDError(
                f"CSV file(s) not found: {', '.join(absent)}. The {layout.name} layout expects "
                f"{', '.join(names[s] for s in SPLITS)} in --csv-dir."
            )
        return paths
    found = sorted(base.glob("*.csv"))  # each checked to be a regular file when read
    if not found:
        raise MRDError(f"No *.csv files in {base}.")
    return {"": found}


def read_conversations(spec: SourceSpec, name: str) -> Conversations:
    """Read and check every CSV file of ``spec``; nothing is encoded yet."""
    layout = layout_of(spec.layout)
    columns = effective_columns(spec)
    files = _csv_files(spec)
    need_split = "" in files
    required = list(REQUIRED_ROLES) + (["split"] if need_split else [])
    for role in required:
        if role not in columns:
            raise MRDError(
                f"The {layout.name} layout needs a column for '{role}'; name it in "
                f"features.columns.{role}."
            )

    rows: list[tuple[str, dict[str, str], str]] = []  # (split, row, where)
    read_files: dict[str, list[str]] = {s: [] for s in SPLITS}
    for split, paths in files.items():
        for path in paths:
            text = decode_csv(path, spec.encoding)
            reader = CheckedReader(text, path)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            wanted = {c for role, cols in columns.items() for c in cols}
            needed = {c for role in required for c in columns[role]}
            missing = sorted(needed - set(header))
            if missing:
                hints = []
                for m in missing:
                    close = difflib.get_close_matches(m, header, n=1)
                    if close:
                        hints.append(f"'{m}' -> '{close[0]}'?")
                raise MRDError(
                    f"{path} lacks the column(s) {', '.join(missing)} of the {layout.name} "
                    f"layout; it has: {', '.join(header) or '(no header)'}."
                    + (f" Close matches: {', '.join(hints)}." if hints else "")
                    + " Map the columns in the dataset YAML (features.columns) or choose the "
                    "right --layout."
                )
            optional_missing = sorted((wanted - needed) - set(header))
            for role in list(columns):
                if role not in required and any(c in optional_missing for c in columns[role]):
                    # An optional column the file does not have is simply not used.
                    columns = {r: c for r, c in columns.items() if r != role}
            for row in reader:
                where = f"{path.name} line {reader.line_num}"
                if None in row:
                    raise MRDError(f"{where} has more fields than the header.")
                if all((v or "").strip() == "" for v in row.values()):
                    continue  # blank line
                rows.append((split, {k: (v or "") for k, v in row.items()}, where))
            if split:
                read_files[split].append(str(path))
            else:
                for s in SPLITS:
                    read_files[s].append(str(path))

    # Labels: given, the layout's, or the sorted labels of the training split.
    label_col = columns["label"][0]
    given = list(spec.label_names) or list(layout.label_names)
    if given:
        label_index = LabelIndex(given, "--labels / label_names")
    else:
        label_index = LabelIndex.from_data(
            (row[label_col], where)
            for split, row, where in rows
            if (split or _split_value(row, columns, where)) == "train"
        )
        if not label_index.names:
            raise MRDError("The training split has no labelled utterances.")
    names = label_index.names

    has_sentiment = "sentiment" in columns
    sentiment_index = LabelIndex(SENTIMENT_NAMES)
    dialogues: dict[DialogueKey, list[Utterance]] = {}
    split_of: dict[DialogueKey, tuple[str, str]] = {}
    splits: dict[str, list[DialogueKey]] = {s: [] for s in SPLITS}
    seen: dict[tuple[DialogueKey, int], str] = {}
    unknown: dict[str, str] = {}
    for split, row, where in rows:
        split = split or _split_value(row, columns, where)
        key: DialogueKey = tuple(row[c].strip() for c in columns["dialogue"])
        if not any(key):
            raise MRDError(f"{where}: the dialogue id ({', '.join(columns['dialogue'])}) is empty.")
        if layout.ids_per_file:
            key = (split, *key)
        if key in split_of and split_of[key][0] != split:
            first_split, first_where = split_of[key]
            raise MRDError(
                f"Dialogue {show_key(conv_id(key, layout.ids_per_file))} is in two splits: {first_split} ({first_where}) and {split} "
                f"({where}). A dialogue must lie in one split, or the test set leaks into "
                "training."
            )
        raw_order = row[columns["order"][0]].strip()
        try:
            order = int(raw_order)
        except ValueError:
            raise MRDError(
                f"{where}: the utterance id {raw_order!r} ({columns['order'][0]}) is not an "
                "integer; it orders the utterances within the dialogue."
            ) from None
        if (key, order) in seen:
            raise MRDError(
                f"{where}: utterance id {order} of dialogue "
                f"{show_key(conv_id(key, layout.ids_per_file))} appears twice (first at "
                f"{seen[(key, order)]}). Each utterance needs its own id."
            )
        seen[(key, order)] = where
        text = row[columns["text"][0]].strip()
        if not text:
            raise MRDError(
                f"{where}: the utterance ({columns['text'][0]}) is empty; every utterance "
                "needs text. Remove the row or fill it in."
            )
        raw_label = row[label_col].strip()
        label = label_index.get(raw_label, where)
        if label is None:
            unknown.setdefault(raw_label, where)
            continue
        sentiment = -1
        if has_sentiment:
            raw_sent = row[columns["sentiment"][0]].strip()
            found = sentiment_index.get(raw_sent, where)
            sentiment = -2 if found is None else found
            if sentiment == -2:
                raise MRDError(
                    f"{where}: unknown sentiment {raw_sent!r}; expected one of "
                    f"{', '.join(SENTIMENT_NAMES)}."
                )
        if key not in split_of:
            split_of[key] = (split, where)
            splits[split].append(key)
            dialogues[key] = []

        def col(role: str, row: dict[str, str] = row) -> str:
            return row[columns[role][0]].strip() if role in columns else ""

        dialogues[key].append(
            Utterance(
                uid=raw_order,
                order=order,
                speakers=speakers_of(row[columns["speaker"][0]], where),
                text=text,
                label=label,
                sentiment=sentiment,
                fields=row,
                audio=col("audio"),
                start=col("start"),
                end=col("end"),
                where=where,
            )
        )
    if unknown:
        listed = ", ".join(f"{lab!r} ({w})" for lab, w in list(unknown.items())[:5])
        raise MRDError(
            f"Unknown label(s): {listed}. The classes are {', '.join(names)}"
            + (" (from the training split)" if not (spec.label_names or layout.label_names) else "")
            + ". Fix the rows, or list every class in label_names (--labels)."
        )
    for s in SPLITS:
        if not splits[s]:
            raise MRDError(
                f"The {s} split has no dialogues"
                + (f" (files: {', '.join(read_files[s])})" if read_files[s] else "")
                + ". Every split needs at least one."
            )
    for utts in dialogues.values():
        utts.sort(key=lambda u: u.order)
    return Conversations(
        name=name,
        layout=layout.name,
        label_names=names,
        dialogues=dialogues,
        splits=splits,
        files=read_files,
        has_sentiment=has_sentiment,
        ids_per_file=layout.ids_per_file,
        merged_labels=label_index.merged,
    )


def conv_id(key: DialogueKey, ids_per_file: bool) -> DialogueKey:
    """The id column values of a key (without the split where the key carries it)."""
    return key[1:] if ids_per_file else key


def _split_value(row: dict[str, str], columns: dict[str, list[str]], where: str) -> str:
    raw = row[columns["split"][0]].strip()
    split = _SPLIT_NAMES.get(raw.lower())
    if split is None:
        raise MRDError(
            f"{where}: unknown split {raw!r} ({columns['split'][0]}); use train, dev (or "
            "val / valid / validation) or test."
        )
    return split

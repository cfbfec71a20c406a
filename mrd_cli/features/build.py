"""The whole path from CSV transcripts (and audio) to feature files, usable without the CLI.

``build_features`` reads and checks the CSVs, encodes the text (through the cache), extracts
audio when asked, and writes the pickles, manifest and dataset YAML. All checks that can fail
on user input run before the slow steps, and nothing is written before everything is ready.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mrd_cli.config.schema import is_plain_name
from mrd_cli.errors import MRDError
from mrd_cli.features import require
from mrd_cli.features.layouts import SPLITS, SourceSpec, layout_of, read_conversations
from mrd_cli.features.speakers import speaker_slots
from mrd_cli.features.text import DEFAULT_MODEL, POOLING, EmbeddingCache, EncodeStats, TextEncoder
from mrd_cli.features.writer import EncodedCorpus, check_outputs, write_all
from mrd_cli.io import MAX_CSV_BYTES, read_limited

# A stage's description and total -> a function that advances it by n.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def default_cache_dir() -> Path:
    """$MRD_CACHE_DIR, else $XDG_CACHE_HOME/mrd, else ~/.cache/mrd."""
    if os.environ.get("MRD_CACHE_DIR"):
        return Path(os.environ["MRD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mrd"


@dataclass
class BuildOptions:
    """Everything `mrd features` needs; the CLI fills it from options and the YAML."""

    source: SourceSpec
    out: Path
    name: str = ""
    text_model: str = DEFAULT_MODEL
    max_tokens: int = 256
    batch_size: int = 64
    cache_dir: Path | None = field(default_factory=default_cache_dir)  # None: no cache
    audio_dir: Path | None = None
    audio_pattern: str = ""  # "" = the layout's pattern
    audio_feature_set: str = "IS10"
    missing: str = "error"
    speaker_slots: int = 9
    force: bool = False


def _sha256(path: Path) -> str:
    return hashlib.sha256(read_limited(path, MAX_CSV_BYTES, "CSV file")).hexdigest()


def _noop(_n: int) -> None:
    return None


def build_features(
    opts: BuildOptions, progress: ProgressFactory | None = None
) -> tuple[list[Path], dict[str, Any]]:
    """Build and write the feature files; return the written paths and the manifest.

    The CLI holds the output directory's lock (``core/lock.py``) around this call, so two
    builds never mix their files under one manifest."""
    layout = layout_of(opts.source.layout)
    name = opts.name or (layout.name if layout.name != "generic" else Path(opts.out).name)
    if not is_plain_name(name):
        raise MRDError(
            f"Dataset name {name!r} cannot be used as a file name (letters, digits, '.', '_', "
            "'-'; not starting with '.'); pass --name."
        )
    out = Path(opts.out)
    check_outputs(out, name, opts.force)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    conv = read_conversations(opts.source, name)
    utterances = conv.utterances()
    slot_names = speaker_slots(conv, opts.speaker_slots)
    with_audio = opts.audio_dir is not None or any(u.audio for u in utterances)
    paths: list[Path] = []
    if with_audio:
        from mrd_cli.features.audio import FEATURE_SETS, audio_paths, check_audio_files

        if opts.audio_feature_set not in FEATURE_SETS:
            raise MRDError(
                f"Unknown audio feature set '{opts.audio_feature_set}'; use one of "
                f"{', '.join(FEATURE_SETS)}."
            )
        if opts.audio_dir is not None and not Path(opts.audio_dir).is_dir():
            raise MRDError(f"Audio directory not found: {opts.audio_dir}.")
        paths = audio_paths(
            conv, opts.audio_dir, opts.audio_pattern or layout.audio_pattern, opts.source.csv_dir
        )
        check_audio_files(paths, opts.missing)  # before the slow steps
        require("opensmile")
    timings["read_csv"] = time.perf_counter() - t_start

    encoder = TextEncoder(opts.text_model, opts.max_tokens, opts.batch_size)
    cache = (
        EmbeddingCache(opts.cache_dir, encoder.model_hash, opts.max_tokens, encoder.expected_dim())
        if opts.cache_dir
        else None
    )
    texts = [u.text for u in utterances]
    stats = EncodeStats()
    t0 = time.perf_counter()
    advance = progress("Encoding text", len(set(texts))) if progress else _noop
    try:
        text_layers = encoder.encode(texts, cache, advance, stats)
    finally:
        if cache is not None:
            cache.save()  # what was encoded, also when interrupted: the next run resumes
    timings["text"] = time.perf_counter() - t0
    timings["text_model_load"] = stats.seconds_model_load

    audio = None
    audio_info: dict[str, Any] | None = None
    if with_audio:
        from mrd_cli.features.audio import extract_audio

        t0 = time.perf_counter()
        advance = progress("Audio features", len(paths)) if progress else _noop
        audio, astats = extract_audio(paths, opts.audio_feature_set, opts.missing, advance)
        timings["audio"] = time.perf_counter() - t0
        audio_info = {
            "feature_set": astats.feature_set,
            "dim": astats.dim,
            "files": astats.files,
            "filled_with_zeros": len(astats.filled_with_zeros),
            "filled_with_zeros_first": astats.filled_with_zeros[:20],
            "source": str(opts.audio_dir) if opts.audio_dir else "audio column",
            "pattern": (opts.audio_pattern or layout.audio_pattern) if opts.audio_dir else "",
        }
    modalities = ["text", "audio"] if with_audio else ["text"]
    placeholders = [m for m in ("audio", "visual") if m not in modalities]

    manifest: dict[str, Any] = {
        "tool": "mrd features",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "name": name,
        "csv_layout": layout.name,
        "file_layout": "meld",
        "source": {
            "csv_dir": str(opts.source.csv_dir),
            "files": {s: conv.files[s] for s in SPLITS},
            "sha256": {Path(f).name: _sha256(Path(f)) for s in SPLITS for f in conv.files[s]},
            "encoding": opts.source.encoding,
        },
        "labels": conv.label_names,
        # Class -> the other spellings of it in the CSVs (case, white space, Unicode form).
        "label_spellings_merged": conv.merged_labels,
        "counts": _counts(conv),
        "text": {
            "model": encoder.name,
            "model_dir": str(encoder.model_dir),
            "model_files_sha256": encoder.model_hash,
            "pooling": POOLING,
            "max_tokens": encoder.max_tokens,
            "dim": int(text_layers.shape[-1]),
            "unique_texts": stats.unique_texts,
            "from_cache": stats.from_cache,
            "encoded": stats.encoded,
            "cache": str(cache.path) if cache else None,
            "cache_dropped": len(stats.cache_dropped),
            "cache_dropped_first": stats.cache_dropped[:20],
        },
        "audio": audio_info,
        "modalities": modalities,
        "placeholders": {
            m: "one zero per utterance in the features pickle, for community loaders; carries "
            "no signal and is not declared in the dataset YAML"
            for m in placeholders
        },
        "speakers": {
            "slots": len(slot_names),
            "names": slot_names,
            "rule": "the most frequent speakers of the training split get a slot each; all "
            "others share the last slot; a line with several speakers takes the slot of the "
            "most frequent of them",
        },
        "sentiment": "from the CSV (0 neutral, 1 positive, 2 negative)"
        if conv.has_sentiment
        else "not in the CSV: -1 for every utterance",
        "validation_split": "dev (validIds)",
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(opts).items()
            if k not in ("source",)
        },
    }
    encoded = EncodedCorpus(conv, text_layers, audio, slot_names, manifest)
    timings["before_write"] = time.perf_counter() - t_start
    manifest["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    t0 = time.perf_counter()
    written = write_all(out, encoded, modalities)
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    return written, {**manifest, "seconds": timings}


def _counts(conv) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in SPLITS:
        labels = np.array([u.label for d in conv.splits[s] for u in conv.dialogues[d]])
        per_class = np.bincount(labels, minlength=len(conv.label_names))
        out[s] = {
            "dialogues": len(conv.splits[s]),
            "utterances": int(labels.size),
            "classes": dict(zip(conv.label_names, per_class.tolist(), strict=True)),
        }
    return out

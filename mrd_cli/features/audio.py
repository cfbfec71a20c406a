"""Per-utterance audio -> openSMILE functionals (one fixed-length vector per wav file).

The default feature set is IS10 (INTERSPEECH 2010 paralinguistics, 1582 values), the set of
the community IEMOCAP audio features; eGeMAPSv02 (88), ComParE_2016 (6373) and emobase (988)
can be chosen. Each utterance's file comes from the CSV's audio column or from a file name
pattern under --audio-dir. Missing or unreadable files are an error that lists the first few,
unless ``missing="zeros"``, which fills their rows with zeros and counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrd_cli.errors import MRDError
from mrd_cli.features import require
from mrd_cli.features.layouts import SPLITS, Conversations

FEATURE_SETS = ("IS10", "eGeMAPSv02", "ComParE_2016", "emobase")


@dataclass
class AudioStats:
    feature_set: str = ""
    dim: int = 0
    files: int = 0
    filled_with_zeros: list[str] = field(default_factory=list)
    seconds: float = 0.0


def audio_paths(
    conv: Conversations, audio_dir: Path | None, pattern: str, csv_dir: Path | None
) -> list[Path]:
    """The wav file of every utterance, in ``conv.utterances()`` order.

    The CSV's audio column wins (relative to --audio-dir, else to the CSV folder); otherwise
    ``pattern`` is filled with the row's columns and ``{split}`` under --audio-dir.
    """
    paths: list[Path] = []
    for split in SPLITS:
        for key in conv.splits[split]:
            for u in conv.dialogues[key]:
                if u.audio:
                    p = Path(u.audio)
                    base = audio_dir or csv_dir or Path(".")
                    paths.append(p if p.is_absolute() else base / p)
                    continue
                if audio_dir is None or not pattern:
                    raise MRDError(
                        f"{u.where}: no audio file for this utterance: give --audio-dir "
                        "(with --audio-pattern) or an audio column."
                    )
                try:
                    name = pattern.format_map({**u.fields, "split": split})
                except (KeyError, IndexError, ValueError) as exc:
                    raise MRDError(
                        f"--audio-pattern {pattern!r} names {exc}, which is not a column of "
                        f"the CSV ({', '.join(u.fields)}) nor {{split}}."
                    ) from None
                paths.append(audio_dir / name.strip())
    return paths


def _listing(items: list[str], total: int) -> str:
    shown = ", ".join(items[:5])
    return shown + (f" and {total - 5} more" if total > 5 else "")


# One utterance's wav file: a few seconds, at most minutes; a bigger file is the wrong one.
MAX_WAV_BYTES = 1 << 30


def check_audio_files(paths: list[Path], missing: str = "error") -> list[str]:
    """The paths that are not files; an error listing them unless ``missing`` is "zeros"."""
    if missing not in ("error", "zeros"):
        raise MRDError(f"--missing must be 'error' or 'zeros', got '{missing}'.")
    # is_file() is False for a fifo or a link to a device: never opened (it would block).
    absent = [str(p) for p in paths if not p.is_file()]
    huge = [str(p) for p in paths if p.is_file() and p.stat().st_size > MAX_WAV_BYTES]
    if huge:
        raise MRDError(
            f"{len(huge)} audio file(s) are over {MAX_WAV_BYTES >> 20} MiB, more than one "
            f"utterance's recording: {_listing(huge, len(huge))}. Check --audio-dir."
        )
    if absent and missing == "error":
        raise MRDError(
            f"{len(absent)} of {len(paths)} audio files are missing: "
            f"{_listing(absent, len(absent))}. Fix --audio-dir / --audio-pattern (or the audio "
            "column), or pass --missing zeros to fill them with zeros."
        )
    return absent


def extract_audio(
    paths: list[Path],
    feature_set: str = "IS10",
    missing: str = "error",
    on_item: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, AudioStats]:
    """[len(paths), dim] float32 openSMILE functionals, one row per file."""
    import time

    if feature_set not in FEATURE_SETS:
        raise MRDError(
            f"Unknown audio feature set '{feature_set}'; use one of {', '.join(FEATURE_SETS)}."
        )
    absent = set(check_audio_files(paths, missing))
    require("opensmile")
    import opensmile

    t0 = time.perf_counter()
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set],
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    dim = len(smile.feature_names)
    out = np.zeros((len(paths), dim), dtype=np.float32)
    bad: list[str] = []
    cache: dict[Path, np.ndarray] = {}
    for i, p in enumerate(paths):
        if str(p) in absent:
            bad.append(str(p))
        elif p in cache:
            out[i] = cache[p]
        else:
            try:
                values = smile.process_file(str(p)).to_numpy(dtype=np.float64)
                if values.shape != (1, dim) or not np.isfinite(values).all():
                    raise ValueError(f"got shape {values.shape} or non-finite values")
                out[i] = cache[p] = values[0].astype(np.float32)
            except Exception as exc:  # noqa: BLE001 - audio readers raise many kinds
                if missing == "error":
                    raise MRDError(
                        f"Cannot read the audio file {p} ({type(exc).__name__}: {exc}). Replace "
                        "it with a readable wav file, or pass --missing zeros to fill it with "
                        "zeros."
                    ) from None
                bad.append(str(p))
        if on_item is not None:
            on_item(1)
    stats = AudioStats(
        feature_set=feature_set,
        dim=dim,
        files=len(paths),
        filled_with_zeros=bad,
        seconds=time.perf_counter() - t0,
    )
    return out, stats

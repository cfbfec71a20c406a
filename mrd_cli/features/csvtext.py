"""Reading CSV text safely: decoding, the checked reader, speaker cells.

Shared by the transcript layouts (``features/layouts.py``) and ``mrd predict``'s
transcripts (``features/transcripts.py``), so both refuse the same bad files the same way.
"""

from __future__ import annotations

import ast
import csv
import io
from pathlib import Path
from typing import Any

from mrd_cli.errors import MRDError
from mrd_cli.io import MAX_CSV_BYTES, read_limited


def decode_csv(path: Path, encoding: str) -> str:
    """A CSV file's text in ``encoding`` (BOM dropped); undecodable bytes are a user error
    naming the line."""
    # A fifo or a link to a device is refused before it is opened (it would block or never
    # end), and so is a file over the size budget.
    data = read_limited(path, MAX_CSV_BYTES, "CSV file")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MRDError(
            f"{path} is not valid {encoding} (byte 0x{data[exc.start]:02x} on line {line}). "
            "Save it as UTF-8, or pass --encoding with the file's encoding (e.g. cp1252)."
        ) from None
    except LookupError:
        raise MRDError(f"Unknown text encoding '{encoding}' (--encoding).") from None
    return text.removeprefix("\ufeff")


def speakers_of(raw: str, where: str) -> tuple[str, ...]:
    """A speaker cell: one name, or a list of names such as ``['Ross Geller']``."""
    raw = raw.strip()
    if raw.startswith("["):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise MRDError(
                f"{where}: the speaker {raw!r} is neither a name nor a list of names "
                "such as ['Ross Geller', 'Joey Tribbiani']."
            )
        names = tuple(v.strip() for v in value)
        return names or ("",)
    return (raw,)


class CheckedReader(csv.DictReader):
    """``csv.DictReader`` whose ``csv.Error`` (a field longer than the csv module's limit,
    a NUL byte) is a user error naming the file and the line, not a traceback."""

    def __init__(self, text: str, path: Path):
        super().__init__(io.StringIO(text, newline=""))
        self.path = path

    def _refuse(self, exc: csv.Error) -> MRDError:
        return MRDError(
            f"{self.path} line {self.line_num} cannot be read as CSV: {exc}. A field that "
            "long or that strange usually means another delimiter or an unclosed quote: "
            "check the file (or features.encoding)."
        )

    def __next__(self) -> dict[str, str]:
        try:
            return super().__next__()
        except csv.Error as exc:
            raise self._refuse(exc) from None

    @property
    def fieldnames(self) -> Any:
        try:
            return csv.DictReader.fieldnames.fget(self)  # type: ignore[attr-defined]
        except csv.Error as exc:
            raise self._refuse(exc) from None

    @fieldnames.setter
    def fieldnames(self, value: Any) -> None:
        csv.DictReader.fieldnames.fset(self, value)  # type: ignore[attr-defined]

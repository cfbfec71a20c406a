"""Class names: the one normalisation every reader of a label applies.

A label is read from a CSV cell, a dataset YAML's ``label_names``, ``--labels`` or a config
mapping keyed by class (``selftrain.thresholds``). Two spellings are the same class when
their *keys* agree: the text in Unicode NFC form, stripped, runs of white space made one
space, case-folded. So ``Joy``, ``joy `` and ``JOY`` are one class, and so are ``café``
written with a combining accent and with a precomposed one. The first spelling seen is
kept for display (tables, reports, the dataset YAML).

A label holding an invisible character (a control character, a zero-width or bidi mark,
any other format character, a private-use or unassigned code point) is refused: it would
look like another class on screen and be a different one in the data.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from mrd_cli.errors import MRDError

# Unicode categories no class name may contain: control, format (zero-width, bidi
# controls, soft hyphen), surrogate, private use, unassigned, line/paragraph separators.
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def display_label(raw: str, where: str = "") -> str:
    """``raw`` in NFC form and stripped; refuses invisible characters and empty names."""
    if not isinstance(raw, str):
        raise MRDError(f"{_at(where)}the class name {raw!r} is not text.")
    text = unicodedata.normalize("NFC", raw).strip()
    bad = [ch for ch in text if unicodedata.category(ch) in _INVISIBLE]
    if bad:
        codes = ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}" for ch in bad[:3])
        raise MRDError(
            f"{_at(where)}the class name {text!r} contains invisible character(s) ({codes}). "
            "Remove them: a class name must read the same on screen as in the data."
        )
    return text


def label_key(raw: str) -> str:
    """The matching key of a label: NFC, stripped, white space collapsed, case-folded."""
    return " ".join(unicodedata.normalize("NFC", raw).split()).casefold()


def check_label_names(names: Iterable[str], where: str) -> list[str]:
    """Display forms of a declared class list; refuses empty names, invisible characters
    and two names that are one class after normalisation."""
    out: list[str] = []
    seen: dict[str, str] = {}
    for raw in names:
        name = display_label(raw, where)
        if not name:
            raise MRDError(f"{_at(where)}a class name is empty.")
        key = label_key(name)
        if key in seen:
            raise MRDError(
                f"{_at(where)}the class names {seen[key]!r} and {name!r} are the same class "
                "(matching ignores case, surrounding white space and Unicode form); list "
                "each class once."
            )
        seen[key] = name
        out.append(name)
    return out


def label_names_problem(names: Iterable[str]) -> str | None:
    """What ``check_label_names`` would refuse in ``names`` (None when nothing): for rules
    that report a problem instead of raising."""
    try:
        check_label_names(names, "")
    except MRDError as exc:
        return str(exc)
    return None


class LabelIndex:
    """Class index of every spelling of the classes ``names``; records merged spellings."""

    def __init__(self, names: Iterable[str], where: str = "label_names") -> None:
        self.names = check_label_names(names, where)
        self._index = {label_key(n): i for i, n in enumerate(self.names)}
        # display name -> other spellings that were read as it
        self.merged: dict[str, list[str]] = {}

    def get(self, raw: str, where: str = "") -> int | None:
        """The class of ``raw`` (None when it is no class); refuses invisible characters."""
        text = display_label(raw, where)
        i = self._index.get(label_key(text))
        if i is not None and text != self.names[i]:
            others = self.merged.setdefault(self.names[i], [])
            if text not in others:
                others.append(text)
        return i

    @classmethod
    def from_data(cls, raws: Iterable[tuple[str, str]]) -> LabelIndex:
        """Classes found in data (``(raw label, where)`` pairs): one per key, the first
        spelling seen kept for display, sorted by that spelling."""
        first: dict[str, str] = {}
        for raw, where in raws:
            text = display_label(raw, where)
            if text:
                first.setdefault(label_key(text), text)
        return cls(sorted(first.values()))


def label_mapping(mapping: dict[str, float], names: list[str], what: str) -> dict[str, float]:
    """A config mapping keyed by class name, re-keyed by the display names ``names``; a key
    that is no class, or two keys for one class, is refused."""
    index = LabelIndex(names)
    out: dict[str, float] = {}
    unknown = []
    for key, value in mapping.items():
        i = index.get(str(key), what)
        if i is None:
            unknown.append(str(key))
            continue
        if index.names[i] in out:
            raise MRDError(
                f"{what} gives the class {index.names[i]!r} twice (as different spellings)."
            )
        out[index.names[i]] = value
    if unknown:
        raise MRDError(
            f"{what} names {', '.join(sorted(unknown))}, which are not classes of this "
            f"dataset ({', '.join(names)}). Set {what} for its classes (a config file "
            "replaces the whole mapping)."
        )
    return out


def _at(where: str) -> str:
    return f"{where}: " if where else ""

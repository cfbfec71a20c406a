"""Typed settings: YAML -> dataclasses, each key checked by the constraints declared beside it.

A settings class is a dataclass whose fields are declared with ``setting(default, *rules)``;
the rules (``at_least``, ``above``, ``interval``, ``one_of``, ``each``, ``keys``, ``length``,
``where``) live in the field's metadata. A check that spans fields of one section is a method
of the section marked ``@cross_check("key")``: it returns what is wrong with ``key`` (or
None). ``check(obj)`` is the one validator: it walks the sections, applies each field's rules
and then each section's cross checks, and names the dotted key of the first problem.

``apply`` writes a nested mapping (a YAML document) onto a settings object, refusing unknown
keys with the closest known key suggested and values of the wrong type; ``key_type`` and
``nested_overrides`` do the same for dotted keys (``distill.alpha``). ``read_yaml`` reads
every YAML file ``mrd`` reads, refusing a key given twice.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import yaml

from mrd_cli.errors import MRDError
from mrd_cli.io import read_limited

# --------------------------------------------------------------------------------------
# Rules: each returns what is wrong with a value ("must be ..."), or None


Rule = Callable[[Any], "str | None"]


def _bounds(
    lo: float | None, hi: float | None, lo_open: bool, hi_open: bool, whole: bool, note: str
) -> Rule:
    tail = f" ({note})" if note else ""

    def rule(x: Any) -> str | None:
        low = lo is not None and (x <= lo if lo_open else x < lo)
        high = hi is not None and (x >= hi if hi_open else x > hi)
        if not (low or high):
            return None
        if whole:
            return f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}{tail}"
        if low:
            return f"must be {'>' if lo_open else '>='} {lo}{tail}"
        return f"must be {'<' if hi_open else '<='} {hi}"

    return rule


def at_least(lo: float, at_most: float | None = None, *, note: str = "") -> Rule:
    """``lo <= x`` (and ``x <= at_most``, the sane bound of a size); names the side broken."""
    return _bounds(lo, at_most, False, False, False, note)


def above(lo: float, at_most: float | None = None, *, note: str = "") -> Rule:
    """``lo < x`` (and ``x <= at_most``); names the side broken."""
    return _bounds(lo, at_most, True, False, False, note)


def interval(lo: float, hi: float, ends: str = "[]", *, note: str = "") -> Rule:
    """``lo <= x <= hi``, each end open or closed as ``ends`` says (``"[)"``: ``lo <= x <
    hi``); the message gives the interval whole."""
    return _bounds(lo, hi, ends[0] == "(", ends[1] == ")", True, note)


def one_of(allowed: Iterable[Any], text: str) -> Rule:
    allowed = tuple(allowed)
    return lambda x: None if x in allowed else text


def where(predicate: Callable[[Any], bool], text: str) -> Rule:
    return lambda x: None if predicate(x) else text


def each(rule: Rule) -> Rule:
    """``rule`` for every item of a list, or every value of a mapping."""

    def check_items(x: Any) -> str | None:
        items = x.values() if isinstance(x, dict) else x
        return next((p for p in map(rule, items) if p is not None), None)

    return check_items


def keys(allowed: Iterable[str], text: str, *, exact: bool = False) -> Rule:
    """A mapping's keys: among ``allowed`` (all of them with ``exact``)."""
    allowed = set(allowed)
    return lambda x: None if (set(x) == allowed if exact else set(x) <= allowed) else text


def length(lo: int, hi: int, text: str) -> Rule:
    return lambda x: None if lo <= len(x) <= hi else text


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def is_plain_name(name: Any) -> bool:
    """A name that may become one path component: no separator, not '', '.', '..' or hidden,
    only letters, digits, '.', '_' and '-' (at most 128 characters)."""
    return isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None


def plain_name(why: str) -> Rule:
    return where(
        is_plain_name,
        f"must be a plain name (letters, digits, '.', '_', '-'; not starting with '.'), {why}",
    )


def setting(default: Any, *rules: Rule) -> Any:
    """A dataclass field with its rules; a list or mapping default is copied per instance."""
    meta = {"rules": rules}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def cross_check(key: str) -> Callable[[Callable[[Any], str | None]], Any]:
    """Mark a section's method as a check of ``key`` that depends on other fields too."""

    def mark(method: Callable[[Any], str | None]) -> Any:
        method.cross_check_key = key  # type: ignore[attr-defined]
        return method

    return mark


# --------------------------------------------------------------------------------------
# The one validator


def problem(obj: Any, where_: str = "") -> tuple[str, str, Any] | None:
    """The first ``(dotted key, "must be ...", value)`` that ``obj``'s rules refuse, or None."""
    for f in dataclasses.fields(obj):
        path = f"{where_}.{f.name}" if where_ else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            found = problem(value, path)
            if found:
                return found
            continue
        for rule in f.metadata.get("rules", ()):
            text = rule(value)
            if text is not None:
                return path, text, value
    for name in dir(type(obj)):
        method = getattr(type(obj), name)
        key = getattr(method, "cross_check_key", None)
        if key is not None:
            text = method(obj)
            if text is not None:
                path = f"{where_}.{key}" if where_ else key
                return path, text, _get(obj, key)
    return None


def check(obj: Any) -> Any:
    """``obj`` if every rule and cross check holds; else an MRDError naming the key."""
    found = problem(obj)
    if found is not None:
        path, text, value = found
        raise MRDError(f"Config key '{path}' {text}, got {value!r}.")
    return obj


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------------------
# Types


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check ``value`` against a field annotation; return (ok, possibly coerced value)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return value in typing.get_args(annotation), value
    if origin in (list, typing.List):  # noqa: UP006
        (inner,) = typing.get_args(annotation)
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, item = _type_ok(item, inner)
            if not ok:
                return False, value
            out.append(item)
        return True, out
    if origin in (dict, typing.Dict):  # noqa: UP006
        key_type_, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            return False, value
        mapped = {}
        for k, item in value.items():
            ok_key, k = _type_ok(k, key_type_)
            ok, item = _type_ok(item, value_type)
            if not (ok_key and ok):
                return False, value
            mapped[k] = item
        return True, mapped
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            ok, coerced = _type_ok(value, arg)
            if ok:
                return True, coerced
        return False, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    return True, value


def value_fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` may be set on a key of type ``annotation``."""
    return _type_ok(value, annotation)[0]


def describe_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (list, typing.List):  # noqa: UP006
        return f"a list of {describe_type(typing.get_args(annotation)[0])}"
    if origin in (dict, typing.Dict):  # noqa: UP006
        key_type_, value_type = typing.get_args(annotation)
        return f"a mapping of {describe_type(key_type_)} to {describe_type(value_type)}"
    return getattr(annotation, "__name__", str(annotation))


def _unknown_key(path: str, key: str, names: list[str], prefix: list[str]) -> MRDError:
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean '{'.'.join([*prefix, close[0]])}'?" if close else ""
    known = f" Known keys here: {', '.join(names)}." if names else ""
    return MRDError(f"Unknown config key '{path}'.{hint}{known}")


def apply(obj: Any, overrides: Any, where_: str = "") -> None:
    """Write a (nested) mapping of overrides onto a settings dataclass, checking each key's
    name and type as it goes (the rules are ``check``'s, once everything is set)."""
    if not isinstance(overrides, dict):
        raise MRDError(f"Config section '{where_ or 'top level'}' must be a mapping.")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in overrides.items():
        path = f"{where_}.{key}" if where_ else str(key)
        if key not in names:
            raise _unknown_key(path, str(key), names, [])
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            apply(current, value, path)
            continue
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise MRDError(
                f"Config key '{path}' must be {describe_type(hints[key])}, got {value!r}."
            )
        numbers = (
            list(coerced.values())
            if isinstance(coerced, dict)
            else coerced
            if isinstance(coerced, list)
            else [coerced]
        )
        if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
            raise MRDError(f"Config key '{path}' must be a finite number, got {value!r}.")
        setattr(obj, key, coerced)


# --------------------------------------------------------------------------------------
# Dotted keys (``distill.alpha``, ``distill.stage_fractions.difficult``)


def key_type(cfg: Any, dotted: str) -> Any:
    """The type of the key ``dotted``; an unknown key is refused with the closest known key
    suggested (as in a config file). A key inside a mapping field (a stage of
    ``distill.stage_fractions``) has the mapping's value type."""
    obj: Any = cfg
    parts = dotted.split(".")
    annotation: Any = None
    for i, part in enumerate(parts):
        if dataclasses.is_dataclass(obj):
            names = [f.name for f in dataclasses.fields(obj)]
            annotation = typing.get_type_hints(type(obj)).get(part)
        elif isinstance(obj, dict):
            names = [str(k) for k in obj]
            annotation = typing.get_args(annotation)[1] if part in obj else None
        else:
            names = []
        if part not in names:
            raise _unknown_key(dotted, part, names, parts[:i])
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    if dataclasses.is_dataclass(obj):
        raise MRDError(f"Config key '{dotted}' is a section; name a key inside it.")
    return annotation


def nested_overrides(cfg: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Dotted ``values`` as a nested overrides mapping (what a ``--config`` file holds). A
    key inside a mapping field brings the field's other entries from ``cfg``, since a
    config file replaces a mapping whole."""
    out: dict[str, Any] = {}
    for dotted, value in values.items():
        parts = dotted.split(".")
        node, obj = out, cfg
        for part in parts[:-1]:
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
            if part not in node:
                node[part] = dict(obj) if isinstance(obj, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return out


def with_values(cfg: Any, values: dict[str, Any]) -> Any:
    """A checked copy of ``cfg`` with the dotted ``values`` set (each key checked as a
    config file's would be)."""
    for dotted in values:
        key_type(cfg, dotted)
    out = copy.deepcopy(cfg)
    apply(out, nested_overrides(cfg, values), "")
    return check(out)


# --------------------------------------------------------------------------------------
# YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps
    the last one silently, so a duplicated key or section would drop settings unseen)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a mapping key must be a plain value", key_node.start_mark
                    ) from None
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is given twice (first on line "
                        f"{seen[key].start_mark.line + 1}, again on line "
                        f"{key_node.start_mark.line + 1}); keep one",
                        None,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text like ``yaml.safe_load``, refusing duplicate keys; every YAML file
    ``mrd`` reads goes through here."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


# A config or dataset YAML is a few kilobytes; a bigger one is the wrong file.
MAX_YAML_BYTES = 16 << 20


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a clear MRDError."""
    if not path.exists():
        raise MRDError(
            f"Config file not found: {path}. Check the path given to --config or --dataset."
        )
    try:
        # A fifo or a link to a device is refused unread; so is a file over the budget.
        data = load_yaml_text(read_limited(path, MAX_YAML_BYTES, "config file").decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise MRDError(f"Config file {path} is not valid YAML: {detail}") from None
    except OSError as exc:
        raise MRDError(f"Could not read {path}: {exc.strerror or exc}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MRDError(f"Config file {path} must contain a mapping at the top level.")
    return data

"""The results files ``mrd plot`` and ``mrd report`` read back, checked like any input.

A run directory's JSON files (``metrics/<split>.json``, ``partition.json``,
``ablation/results.json``, ``tune/<study>/results.json``) may have been edited, truncated or
crafted. ``load_results`` reads one within a size and nesting budget and refuses NaN,
infinities and numbers too large to print; ``check_*`` then check the shape every table
and figure relies on (objects where objects belong, every key, a label list as long as
the matrix, counts that are counts), so that a damaged file is one clear error naming
the file and the place, never a traceback nor a silently wrong table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mrd_cli.core.groups import GROUPS
from mrd_cli.core.rundir import ROLES
from mrd_cli.errors import MRDError

MAX_BYTES = 64 * 2**20
MAX_DEPTH = 32
MAX_LABELS = 10_000
# Beyond this many classes a confusion matrix is neither legible nor cheap to draw.
MAX_DRAWN_CLASSES = 100
_MAX_NUMBER = 1e15


def load_results(path: Path, made_by: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when absent. Anything else is a user error."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        raise MRDError(f"{path} is not a regular file; remove it and rerun `{made_by}`.")
    if path.stat().st_size > MAX_BYTES:
        raise MRDError(
            f"{path} is larger than {MAX_BYTES // 2**20} MiB, far beyond any results file "
            f"mrd writes; rerun `{made_by}`."
        )

    def refuse(token: str) -> Any:
        raise ValueError(f"the non-finite number {token}")

    def finite(token: str) -> float:
        value = float(token)
        if not abs(value) <= _MAX_NUMBER:
            raise ValueError(f"the number {token}, out of range")
        return value

    def bounded(token: str) -> int:
        if len(token.lstrip("-")) > 15:
            raise ValueError(f"the number {token[:20]}, out of range")
        return int(token)

    try:
        doc = json.loads(
            path.read_text(encoding="utf-8"),
            parse_constant=refuse,
            parse_float=finite,
            parse_int=bounded,
        )
    except RecursionError:
        raise MRDError(f"{path} is nested too deeply; rerun `{made_by}`.") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise MRDError(f"{path} is not a valid results file ({exc}); rerun `{made_by}`.") from None
    if not isinstance(doc, dict):
        raise MRDError(f"{path} is not an mrd results file; rerun `{made_by}`.")
    _check_depth(doc, path, made_by)
    return doc


def read_results(path: Path, kind: str) -> dict[str, Any] | None:
    """The results file ``path`` of ``kind`` (``KINDS``), loaded and checked; None when
    absent."""
    check, made_by = KINDS[kind]
    doc = load_results(path, made_by)
    if doc is not None:
        check(doc, Path(path))
    return doc


def _check_depth(doc: Any, path: Path, made_by: str) -> None:
    todo = [(doc, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise MRDError(f"{path} is nested too deeply; rerun `{made_by}`.")
        if isinstance(value, dict):
            todo.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value)


class _Checker:
    """Type checks that name the file and the place of the first problem."""

    def __init__(self, path: Path, made_by: str):
        self.path, self.made_by = path, made_by

    def fail(self, where: str, what: str) -> None:
        raise MRDError(
            f"{self.path} is damaged: {where} {what}. Rerun `{self.made_by}` to write it again."
        )

    def obj(self, doc: Any, key: str, where: str = "") -> dict[str, Any]:
        here = f"{where}.{key}" if where else key
        if not isinstance(doc, dict) or key not in doc:
            self.fail(here, "is missing")
        if not isinstance(doc[key], dict):
            self.fail(here, f"is a {type(doc[key]).__name__}, not an object")
        return doc[key]

    def seq(self, doc: Any, key: str, where: str = "") -> list[Any]:
        here = f"{where}.{key}" if where else key
        if not isinstance(doc, dict) or key not in doc:
            self.fail(here, "is missing")
        if not isinstance(doc[key], list):
            self.fail(here, f"is a {type(doc[key]).__name__}, not a list")
        return doc[key]

    def text(self, doc: dict[str, Any], key: str, where: str = "") -> str:
        value = doc.get(key)
        if not isinstance(value, str):
            self.fail(f"{where}.{key}" if where else key, "is not a text")
        return value

    def num(self, value: Any, where: str, optional: bool = False) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, "is not a number")

    def count(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(where, "is not a count (a whole number >= 0)")

    def labels(self, doc: dict[str, Any]) -> list[str]:
        labels = self.seq(doc, "labels")
        if not labels or len(labels) > MAX_LABELS:
            self.fail("labels", f"must hold 1 to {MAX_LABELS} class names")
        if not all(isinstance(x, str) for x in labels) or len(set(labels)) != len(labels):
            self.fail("labels", "are not distinct class names")
        return labels

    def per_label(self, doc: dict[str, Any], key: str, labels: list[str], where: str) -> dict:
        table = self.obj(doc, key, where)
        missing = [lab for lab in labels if lab not in table]
        if missing:
            self.fail(f"{where}.{key}", f"lacks the class {missing[0]!r}")
        return table


def check_metrics(doc: dict[str, Any], path: Path) -> None:
    """``RUN/metrics/<split>.json`` (``mrd evaluate``)."""
    c = _Checker(path, "mrd evaluate")
    labels = c.labels(doc)
    c.text(doc, "split")
    c.text(doc, "dataset")
    models = c.obj(doc, "models")
    for name, entry in models.items():
        where = f"models.{name}"
        if not isinstance(entry, dict):
            c.fail(where, "is not an object")
        f1 = c.per_label(entry, "per_class_f1", labels, where)
        for lab in labels:
            c.num(f1[lab], f"{where}.per_class_f1.{lab}")
        c.num(entry.get("weighted_f1"), f"{where}.weighted_f1")
        if "confusion_matrix" in entry:
            matrix = c.seq(entry, "confusion_matrix", where)
            if len(matrix) != len(labels) or any(
                not isinstance(row, list) or len(row) != len(labels) for row in matrix
            ):
                c.fail(
                    f"{where}.confusion_matrix",
                    f"is not {len(labels)} x {len(labels)} (one row and column per label)",
                )
            for i, row in enumerate(matrix):
                for j, cell in enumerate(row):
                    c.count(cell, f"{where}.confusion_matrix[{i}][{j}]")
    pairs = []
    if doc.get("ambiguity"):
        pairs.append(("ambiguity", c.obj(doc, "ambiguity")))
    if doc.get("ambiguity_by_stage"):
        stages = c.obj(doc, "ambiguity_by_stage")
        pairs += [(f"ambiguity_by_stage.{s}", c.obj(stages, s)) for s in stages]
    for where, amb in pairs:
        for key in ("mcti", "mitc"):
            table = c.per_label(amb, key, labels, where)
            for lab in labels:
                c.count(table[lab], f"{where}.{key}.{lab}")


def check_partition(doc: dict[str, Any], path: Path) -> None:
    """``RUN/partition.json`` (``mrd partition``)."""
    c = _Checker(path, "mrd partition")
    counts = c.obj(doc, "counts")
    labels: list[str] | None = None
    for group in GROUPS:
        per_class = c.obj(counts, group, "counts")
        if labels is None:
            labels = list(per_class)
            if not labels:
                c.fail(f"counts.{group}", "is empty (no class)")
        if list(per_class) != labels:
            c.fail(f"counts.{group}", "has other classes than the other groups")
        for lab, n in per_class.items():
            c.count(n, f"counts.{group}.{lab}")


def check_ablation(doc: dict[str, Any], path: Path) -> None:
    """``RUN/ablation/results.json`` (``mrd ablate``)."""
    c = _Checker(path, "mrd ablate")
    labels = c.labels(doc)
    c.text(doc, "split")
    c.text(doc, "dataset")
    c.seq(doc, "seeds")
    for i, row in enumerate(c.seq(doc, "rows")):
        where = f"rows[{i}]"
        if not isinstance(row, dict):
            c.fail(where, "is not an object")
        if row.get("role") not in ROLES:
            c.fail(f"{where}.role", f"is not one of {', '.join(ROLES)}")
        c.text(row, "variant", where)
        f1 = c.per_label(row, "per_class_f1", labels, where)
        for lab in labels:
            _mean_std(c, f1, lab, f"{where}.per_class_f1")
        w = _mean_std(c, row, "weighted_f1", where)
        for k, v in enumerate(w.get("values") or []):
            c.num(v, f"{where}.weighted_f1.values[{k}]")
        c.num(row.get("delta_wf1"), f"{where}.delta_wf1", optional=True)
        c.num(row.get("p_paired_t"), f"{where}.p_paired_t", optional=True)
        ci = row.get("bootstrap_ci95")
        if ci is not None:
            if not isinstance(ci, list) or len(ci) != 2:
                c.fail(f"{where}.bootstrap_ci95", "is not a pair of bounds")
            for v in ci:
                c.num(v, f"{where}.bootstrap_ci95", optional=True)


def _mean_std(c: _Checker, doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = c.obj(doc, key, where)
    for part in ("mean", "std"):
        c.num(value.get(part), f"{where}.{key}.{part}")
    return value


def check_study(doc: dict[str, Any], path: Path) -> None:
    """``RUN/tune/<study>/results.json`` (``mrd tune``)."""
    c = _Checker(path, "mrd tune")
    for key in ("study", "dataset", "target"):
        c.text(doc, key)
    c.num(doc.get("pretrained_value"), "pretrained_value", optional=True)
    for i, trial in enumerate(c.seq(doc, "trials")):
        where = f"trials[{i}]"
        if not isinstance(trial, dict):
            c.fail(where, "is not an object")
        c.text(trial, "state", where)
        c.count(trial.get("number"), f"{where}.number")
        c.num(trial.get("value"), f"{where}.value", optional=True)
        c.num(trial.get("best_intermediate"), f"{where}.best_intermediate", optional=True)


def check_comparison(doc: dict[str, Any], path: Path) -> None:
    """``RUN/compare/results.json`` (``mrd compare``): the rows the report reads."""
    c = _Checker(path, "mrd compare")
    for i, row in enumerate(c.seq(doc, "rows")):
        if not isinstance(row, dict):
            c.fail(f"rows[{i}]", "is not an object")


# kind -> (its check, the command that writes it)
KINDS = {
    "metrics": (check_metrics, "mrd evaluate"),
    "partition": (check_partition, "mrd partition"),
    "ablation": (check_ablation, "mrd ablate"),
    "study": (check_study, "mrd tune"),
    "comparison": (check_comparison, "mrd compare"),
}

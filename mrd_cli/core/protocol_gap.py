"""The protocol gap: what a test-selected protocol would have reported on the same run.

The public training scripts of M3Net, CMERC and MRD keep the epoch with the best *test*
score. mrd chooses every epoch on validation. With the diagnostic on (``Session.protocol_gap``,
the commands' ``--protocol-gap``), a ``TestWatch`` scores each model on the test split after
every epoch, once everything that selects (validation, the best epoch, the training state,
early stopping) is done for that epoch, and keeps the scores to itself. The scores are
written next to the checkpoint as ``<checkpoint>.test_by_epoch.json``, with the
checkpoint's sha256, never into the checkpoint, the training state or the history, so the
selected checkpoints and every honest figure are the same bytes with the diagnostic on or
off. The figure it adds is labelled ``DIAGNOSTIC`` wherever it is shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrd_cli.core.stats import mean_std
from mrd_cli.core.tables import PaperTable
from mrd_cli.errors import MRDError
from mrd_cli.io import MAX_JSON_BYTES, atomic_write_json, file_sha256, read_limited

if TYPE_CHECKING:  # torch and scikit-learn only where models are scored: `mrd report` reads
    from mrd_cli.data.tensors import SplitTensors

DIAGNOSTIC = "test-selected protocol (diagnostic, epoch chosen on TEST; not a result)"
FORMAT = "mrd-test-by-epoch-1"


class TestWatch:
    """Each model's test W-F1 after every epoch it trains (``Trainer``'s ``after_epoch``)."""

    __test__ = False  # not a pytest class

    def __init__(self, test: SplitTensors, label_names: list[str]):
        self.test = test
        self.label_names = label_names
        self.y_true = test.labels[test.mask].cpu().numpy()
        self.per_epoch: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, epoch: int, models: dict[str, Any]) -> None:
        """Score every model after 0-based ``epoch``: eval mode, no dropout, no random draw;
        the models' training mode is restored (``training.batch_logits``)."""
        from mrd_cli.core.metrics import classification_report
        from mrd_cli.core.training import predict

        for name, model in models.items():
            pred = predict(model, self.test)[self.test.mask].cpu().numpy()
            wf1 = classification_report(self.y_true, pred, self.label_names)["weighted_f1"]
            self.per_epoch.setdefault(name, []).append(
                {"epoch": epoch + 1, "test_weighted_f1": wf1}
            )

    def write(self, name: str, checkpoint: Path, selected_epoch: int, epochs_run: int) -> Path:
        """Write model ``name``'s scores beside ``checkpoint`` (already saved); returns the path."""
        seen = self.per_epoch.get(name, [])
        best = max(seen, key=lambda e: e["test_weighted_f1"], default=None)  # first on ties
        doc = {
            "format": FORMAT,
            "label": DIAGNOSTIC,
            "checkpoint_sha256": file_sha256(checkpoint),
            "val_selected_epoch": selected_epoch,
            "test_selected_epoch": None if best is None else best["epoch"],
            "test_selected_weighted_f1": None if best is None else best["test_weighted_f1"],
            "per_epoch": seen,
            # False after a resume: the epochs before it were not scored.
            "complete": len(seen) == epochs_run,
        }
        path = diagnostic_path(checkpoint)
        atomic_write_json(path, doc)
        return path


def diagnostic_path(checkpoint: Path) -> Path:
    """Where the test-by-epoch scores of ``checkpoint`` live."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".test_by_epoch.json")


def read_diagnostic(checkpoint: Path) -> dict[str, Any] | None:
    """The scores written for ``checkpoint``, if there are any and they were written for
    these very bytes (a checkpoint trained again leaves its old scores stale: ignored)."""
    path = diagnostic_path(checkpoint)
    try:
        doc = json.loads(read_limited(path, MAX_JSON_BYTES, "protocol-gap file"))
    except (MRDError, OSError, ValueError):  # absent, damaged or not a regular file: none
        return None
    ok = (
        isinstance(doc, dict)
        and doc.get("format") == FORMAT
        and doc.get("checkpoint_sha256") == file_sha256(checkpoint)
        and isinstance(doc.get("test_selected_weighted_f1"), (int, float))
    )
    return doc if ok else None


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What a report shows of one model's scores."""
    return {
        "label": DIAGNOSTIC,
        "epoch": doc["test_selected_epoch"],
        "weighted_f1": doc["test_selected_weighted_f1"],
        "complete": doc["complete"],
    }


def gap_entry(checkpoint: Path) -> dict[str, Any]:
    """``{"test_selected": ...}`` for a model's per-seed record, or nothing without scores."""
    doc = read_diagnostic(checkpoint)
    return {} if doc is None else {"test_selected": summary(doc)}


def has_gap(result: dict[str, Any]) -> bool:
    """Every model of a cell's ``result`` (role -> record) carries its diagnostic."""
    return all(isinstance(r, dict) and "test_selected" in r for r in result.values())


def gap_stats(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Over seeds: the test-selected W-F1 and its gap to the honest (validation-chosen)
    one, mean ± std and per seed; nothing unless every seed has its diagnostic."""
    if not per_seed or not all("test_selected" in c for c in per_seed):
        return {}
    picked = [c["test_selected"]["weighted_f1"] for c in per_seed]
    gaps = [p - c["weighted_f1"] for p, c in zip(picked, per_seed)]
    (m, s), (gm, gs) = mean_std(picked), mean_std(gaps)
    return {
        "test_selected_diagnostic": {
            "label": DIAGNOSTIC,
            "weighted_f1": {"mean": m, "std": s, "values": picked},
            "gap_to_honest": {"mean": gm, "std": gs, "values": gaps},
            "epochs": [c["test_selected"]["epoch"] for c in per_seed],
            "complete": all(c["test_selected"]["complete"] for c in per_seed),
        }
    }


def gap_table(
    metrics: dict[str, Any] | None = None, *summaries: dict[str, Any] | None
) -> PaperTable | None:
    """The diagnostic beside the honest figures: every evaluated model of ``metrics``
    (``RUN/metrics/<split>.json``) and every row of the ablation or comparison
    ``summaries`` that carries it (mean ± std and per seed). None when nothing does."""
    rows: list[list[str]] = []
    for name, report in ((metrics or {}).get("models") or {}).items():
        gap = report.get("test_selected_diagnostic")
        if gap:
            rows.append(
                [
                    name,
                    f"{report['weighted_f1']:.2f} (epoch {report.get('epoch')})",
                    f"{gap['weighted_f1']:.2f} (epoch {gap['epoch']})"
                    + ("" if gap["complete"] else " *"),
                    f"{gap['weighted_f1'] - report['weighted_f1']:+.2f}",
                    "",
                ]
            )
    for summary in summaries:
        for row in (summary or {}).get("rows") or []:
            gap = row.get("test_selected_diagnostic")
            if not gap:
                continue
            w, d, g = row["weighted_f1"], gap["weighted_f1"], gap["gap_to_honest"]
            name = row.get("name") or f"{row['backbone']} (M_{summary.get('role', 'multi')})"
            rows.append(
                [
                    name,
                    f"{w['mean']:.2f} ± {w['std']:.2f}",
                    f"{d['mean']:.2f} ± {d['std']:.2f}" + ("" if gap["complete"] else " *"),
                    f"{g['mean']:+.2f} ± {g['std']:.2f}",
                    ", ".join(f"{v:.2f} (ep {e})" for v, e in zip(d["values"], gap["epochs"])),
                ]
            )
    if not rows:
        return None
    return PaperTable(
        name="protocol_gap",
        caption=(
            "DIAGNOSTIC, not a result: W-F1 (%) of the epoch a test-selected protocol keeps "
            "(the best test score over the training epochs, as the public M3Net, CMERC and MRD "
            "scripts do) beside the honest figure (epoch chosen on validation), same runs; "
            "multi-seed rows give mean ± std and each seed's test-selected W-F1 and epoch. "
            "* resumed training: epochs before the resume were not scored."
        ),
        columns=["Model", "Honest W-F1", "Test-selected W-F1 (diagnostic)", "Gap", "Per seed"],
        rows=rows,
        align="lrrrl",
    )

"""Recipe: evaluate checkpoints on a split (per-class F1, W-F1, accuracy, macro F1,
confusion matrices) and the ambiguity table of the multimodal and the text model.
Writes ``RUN/metrics/<split>.json``."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrd_cli.core.card import write_card
from mrd_cli.core.decision import distill_decision
from mrd_cli.core.metrics import ambiguity_table, classification_report
from mrd_cli.core.protocol_gap import read_diagnostic
from mrd_cli.core.protocol_gap import summary as gap_summary
from mrd_cli.core.provenance import chain_problems
from mrd_cli.core.session import Session
from mrd_cli.core.training import predict
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_json
from mrd_cli.models.registry import backbone_departures


@dataclass
class EvaluationResult:
    """Metrics of each evaluated checkpoint (``models``, keyed like ``pretrain/multi``) and
    the ambiguity table of one multimodal/text pair (None without such a pair)."""

    dataset: str
    split: str
    labels: list[str]
    num_utterances: int
    models: dict[str, dict[str, Any]]
    ambiguity: dict[str, Any] | None = None
    ambiguity_models: dict[str, str] | None = None
    # The ambiguity table of each stage whose pair was evaluated (``pretrain``: the paper's
    # pilot study, Tables 1-2; ``distill``), for `mrd report`.
    ambiguity_by_stage: dict[str, dict[str, Any]] | None = None
    # Where the chain distill -> partition -> pretrain of the run directory is broken
    # (``core/provenance.py``); the Δ columns are left out when it is.
    provenance_problems: list[str] | None = None
    # Where the metrics were saved (None: not saved; see ``evaluate``).
    saved_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "split": self.split,
            "labels": self.labels,
            "num_utterances": self.num_utterances,
            "models": self.models,
            "ambiguity": self.ambiguity,
        }
        if self.ambiguity_models is not None:
            out["ambiguity_models"] = self.ambiguity_models
        if self.ambiguity_by_stage:
            out["ambiguity_by_stage"] = self.ambiguity_by_stage
        out["provenance"] = {
            "consistent": not self.provenance_problems,
            "problems": list(self.provenance_problems or []),
        }
        return out


def evaluate(
    session: Session,
    checkpoints: dict[str, Path] | None = None,
    split: str = "test",
    save: bool = True,
) -> EvaluationResult:
    """Metrics of each checkpoint on ``split`` (default: every checkpoint in the run
    directory) and the ambiguity table; saved as ``RUN/metrics/<split>.json``.

    The ambiguity table compares the multimodal and the text model of the latest stage
    present (distill if both distilled models are given, else pretrain). Checkpoints named
    ``stage/role`` must be the run directory's own; the provenance chain of those is checked
    and any break is reported in ``provenance``. A checkpoint from elsewhere is named by its
    path, and the results are then not saved in this run directory (they do not describe
    its models).
    """
    checkpoints = session.run.checkpoints() if checkpoints is None else checkpoints
    if not checkpoints:
        raise MRDError(
            f"No checkpoints in {session.run.root}. Run `mrd pretrain --dataset "
            f"{session.cfg.dataset.name}` first, or pass --checkpoint PATH."
        )
    data = session.tensors(split)
    y_true = data.labels[data.mask].cpu().numpy()
    labels = session.corpus.label_names
    models: dict[str, Any] = {}
    preds: dict[str, np.ndarray] = {}
    roles: dict[str, str] = {}
    loaded: dict[str, dict[str, Any]] = {}
    for name, path in checkpoints.items():
        made_by = {"distill": "mrd distill", "selftrain": "mrd selftrain"}.get(
            name.split("/")[0], "mrd pretrain"
        )
        model, ckpt = session.load_model(path, made_by)
        loaded[name] = ckpt
        y_pred = predict(model, data)[data.mask].cpu().numpy()
        preds[name] = y_pred
        roles[name] = ckpt["role"]
        report = classification_report(y_true, y_pred, labels)
        report["epoch"] = ckpt.get("epoch")
        report["val_weighted_f1"] = (ckpt.get("val_metrics") or {}).get("weighted_f1")
        if ckpt.get("stage") == "distill":
            # Whether distillation changed the model and why (core/decision.py).
            report["distillation"] = distill_decision(ckpt)
            report["start_guard"] = ckpt.get("start_guard")
        report["backbone"] = ckpt["model_spec"]["backbone"]
        departures = backbone_departures(report["backbone"])
        if departures:  # where mrd's network departs from the published one
            report["departures"] = departures
        gap = read_diagnostic(path)
        if gap is not None:  # labelled diagnostic: what a test-selected protocol would report
            report["test_selected_diagnostic"] = gap_summary(gap)
        if isinstance(ckpt.get("selftrain"), dict):
            # `mrd selftrain`'s label budget travels with the model (a transductive one was
            # trained on the test features and says so wherever it is shown).
            report["selftrain"] = ckpt["selftrain"]
        models[name] = report
    result = EvaluationResult(
        dataset=session.corpus.name,
        split=split,
        labels=labels,
        num_utterances=int(y_true.shape[0]),
        models=models,
    )
    pair = _ambiguity_pair(roles)
    if pair is not None:
        multi, text = pair
        result.ambiguity = ambiguity_table(y_true, preds[multi], preds[text], labels)
        result.ambiguity_models = {"multi": multi, "text": text}
    result.ambiguity_by_stage = {
        stage: ambiguity_table(y_true, preds[f"{stage}/multi"], preds[f"{stage}/text"], labels)
        for stage in ("pretrain", "distill")
        if roles.get(f"{stage}/multi") == "multi" and roles.get(f"{stage}/text") == "text"
    }
    result.provenance_problems = chain_problems(session.run, loaded)
    own = all(_inside(path, session.run.root) for path in checkpoints.values())
    if save and own and session.writable:
        target = metrics_path(session, split)
        result.saved_to = str(target)
        try:
            atomic_write_json(target, result.to_dict())
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            result.saved_to = None  # a read-only run directory: the tables are still shown
        if result.saved_to and split == "test":  # the model cards get their test scores
            for name, path in checkpoints.items():
                write_card(path, loaded[name], test_metrics=models[name])
    return result


def _inside(path: Path, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def metrics_path(session: Session, split: str) -> Path:
    return session.run.metrics / f"{split}.json"


def _ambiguity_pair(roles: dict[str, str]) -> tuple[str, str] | None:
    for stage in ("distill", "pretrain", ""):
        multi = [n for n, r in roles.items() if r == "multi" and n.startswith(stage)]
        text = [n for n, r in roles.items() if r == "text" and n.startswith(stage)]
        if multi and text:
            return multi[0], text[0]
    return None

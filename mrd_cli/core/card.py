"""Model cards: a Markdown file beside every checkpoint saying what it is and how it was chosen.

``RUN/pretrain/multi.pt`` gets ``RUN/pretrain/multi.md``: the data it was trained on
(fingerprint, split sizes, where the validation split came from), the selection protocol
(validation W-F1, the chosen epoch, early stopping, the start guard's decision; the test
split plays no part in selection), validation metrics, test metrics once ``mrd evaluate``
has scored it, the seed, the effective config, the mrd version and git commit that made it,
and its parent files with their sha256. Every field comes from the checkpoint itself
(``card_fields``), so a card can always be rebuilt from its checkpoint; the checkpoint's own
sha256 ties the card to the file it describes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mrd_cli.io import atomic_write_text, file_sha256

FIELDS_HEADING = "## Fields (JSON, for tools; the config is above)"
SELECTION_RULE = (
    "the epoch with the highest validation W-F1; the test split is never read during "
    "training or selection"
)


def parent(what: str, path: Path, root: Path, sha256: str | None = None) -> dict[str, str]:
    """A parent file's record: what it is, its path (relative to the run directory ``root``
    when inside it, so that a run directory copied elsewhere keeps equal records), sha256."""
    path = Path(path)
    try:
        shown = str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        shown = str(path)
    return {"what": what, "path": shown, "sha256": sha256 or file_sha256(path)}


def card_path(checkpoint: Path) -> Path:
    """Where the card of ``checkpoint`` lives: the same name with ``.md``."""
    return Path(checkpoint).with_suffix(".md")


def _metrics_summary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if not metrics:
        return None
    keys = ("weighted_f1", "accuracy", "macro_f1", "per_class_f1")
    return {k: metrics[k] for k in keys if k in metrics}


def card_fields(
    ckpt: dict[str, Any], checkpoint: Path, test_metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The card of a checkpoint's payload (as saved or as loaded), as a JSON-able dict."""
    spec = ckpt.get("model_spec") or {}
    guard = ckpt.get("start_guard")
    selection: dict[str, Any] = {
        "rule": SELECTION_RULE,
        "validation_split": ckpt.get("val_source") or "the corpus's validation split",
        "chosen_epoch": ckpt.get("epoch"),
        "stopping": ckpt.get("stopping"),
        "test_split_used": False,
    }
    if ckpt.get("stage") == "distill":
        selection["start_candidate"] = "the pretrained weights compete as epoch 0"
        selection["kept_pretrained"] = ckpt.get("kept_pretrained")
        selection["start_guard"] = guard
    if isinstance(ckpt.get("selftrain"), dict):
        selection["selftrain"] = ckpt["selftrain"]
    path = Path(checkpoint)
    return {
        "checkpoint": str(path),
        "checkpoint_sha256": file_sha256(path) if path.is_file() else None,
        "stage": ckpt.get("stage"),
        "role": ckpt.get("role"),
        "backbone": spec.get("backbone", "dialogue"),
        "modalities": spec.get("modalities"),
        "labels": ckpt.get("label_names"),
        "data": {
            "dataset": ckpt.get("dataset"),
            "fingerprint": ckpt.get("data_fingerprint"),
            "splits": ckpt.get("split_sizes"),
        },
        "selection": selection,
        "validation_metrics": _metrics_summary(ckpt.get("val_metrics")),
        "test_metrics": _metrics_summary(test_metrics),
        "seed": ckpt.get("seed"),
        "mrd_version": ckpt.get("mrd_version"),
        "git_commit": ckpt.get("git_commit"),
        "parents": ckpt.get("parents") or [],
        "config": ckpt.get("config"),
    }


def render_card(card: dict[str, Any]) -> str:
    """The card as Markdown for people (the same fields as ``card_fields``)."""
    sel, data = card["selection"], card["data"]
    lines = [
        f"# Model card: {card['stage']} {card['role']} ({card['backbone']})",
        "",
        f"- Checkpoint: `{Path(card['checkpoint']).name}` (sha256 `{card['checkpoint_sha256']}`)",
        f"- Dataset: {data['dataset']}, data fingerprint `{data['fingerprint']}`",
        f"- Modalities: {', '.join(card['modalities'] or [])}; classes: "
        f"{', '.join(card['labels'] or [])}",
        f"- Seed: {card['seed']}; mrd {card['mrd_version']}, git commit "
        f"`{card['git_commit'] or 'unknown'}`",
        "",
        "## Data",
        "",
        "| split | dialogues | utterances |",
        "|---|---:|---:|",
    ]
    for split, size in (data.get("splits") or {}).items():
        lines.append(f"| {split} | {size['dialogues']} | {size['utterances']} |")
    lines += [
        "",
        "## Selection",
        "",
        f"- Rule: {sel['rule']}.",
        f"- Validation split: {sel['validation_split']}.",
        f"- Chosen epoch: {sel['chosen_epoch']}"
        + (" (the pretrained weights were kept)" if sel.get("kept_pretrained") else ""),
    ]
    stopping = sel.get("stopping") or {}
    if stopping:
        lines.append(f"- Training: {stopping.get('stop_reason')}.")
    guard = sel.get("start_guard")
    if guard:
        decision = "kept the pretrained weights" if guard["kept_start"] else "took the epoch"
        lines.append(
            f"- Start guard: epoch {guard['best_epoch']} (val W-F1 "
            f"{guard['best_val_weighted_f1']:.2f}) beat the start "
            f"({guard['start_val_weighted_f1']:.2f}) in {100 * guard['p_gain']:.0f}% of "
            f"bootstrap resamples (needs {100 * guard['required']:.0f}%): {decision}."
        )
    elif card["stage"] == "distill" and sel.get("kept_pretrained"):
        lines.append("- Start guard: no distillation epoch beat the pretrained weights.")
    elif card["stage"] == "distill":
        lines.append("- Start guard: not applied (distill.start_confidence is 0).")
    if sel.get("selftrain"):
        st = sel["selftrain"]
        lines.append(
            f"- Self-training round {st.get('round')}, labels of "
            f"{100 * st.get('labeled_fraction', 1.0):.0f}% of the training dialogues"
            + (
                " (TRANSDUCTIVE: pseudo-labels of the test features)"
                if st.get("transductive")
                else ""
            )
            + "."
        )
    lines += ["", "## Metrics (percent)", ""]
    lines += _metrics_table(card["validation_metrics"], card["test_metrics"])
    lines += ["", "## Parents", ""]
    if card["parents"]:
        lines += [f"- {p['what']}: `{p['path']}` (sha256 `{p['sha256']}`)" for p in card["parents"]]
    else:
        lines.append("- none (trained from scratch)")
    lines += [
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(card["config"] or {}, sort_keys=False).rstrip(),
        "```",
        "",
        FIELDS_HEADING,
        "",
        "```json",
        json.dumps({k: v for k, v in card.items() if k != "config"}, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def _metrics_table(val: dict[str, Any] | None, test: dict[str, Any] | None) -> list[str]:
    rows = ["| metric | validation | test |", "|---|---:|---:|"]

    def cell(m: dict[str, Any] | None, key: str, cls: str | None = None) -> str:
        if not m:
            return "—"
        value = m["per_class_f1"].get(cls) if cls else m.get(key)
        return "—" if value is None else f"{value:.2f}"

    for label, key in (("W-F1", "weighted_f1"), ("Accuracy", "accuracy"), ("Macro F1", "macro_f1")):
        rows.append(f"| {label} | {cell(val, key)} | {cell(test, key)} |")
    for cls in (val or {}).get("per_class_f1", {}):
        rows.append(f"| F1 {cls} | {cell(val, '', cls)} | {cell(test, '', cls)} |")
    if not test:
        rows += ["", "Test metrics: not yet measured (`mrd evaluate` adds them)."]
    return rows


def write_card(
    checkpoint: Path, ckpt: dict[str, Any], test_metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the card beside ``checkpoint`` (atomically) and return its fields."""
    card = card_fields(ckpt, checkpoint, test_metrics)
    atomic_write_text(card_path(checkpoint), render_card(card))
    return card


def read_card_fields(path: Path) -> dict[str, Any] | None:
    """The fields of a card file (its JSON comment), or None when unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        block = text[text.rindex(FIELDS_HEADING) :]
        body = block[block.index("```json") + len("```json") : block.rindex("```")]
        fields = json.loads(body)
        config = text[text.index("## Config") :]
        config = config[config.index("```yaml") + len("```yaml") : config.index("\n```\n")]
        fields["config"] = yaml.safe_load(config)
        return fields
    except (OSError, ValueError, yaml.YAMLError):
        return None

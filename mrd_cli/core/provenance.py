"""Steps that check each other: which files were made from which.

Each step records what it was made from: a partition records the sha256 of the two
pretrained checkpoints (``core/partition.py``), a distilled checkpoint the sha256 of the
partition (``partition_sha256``). ``check_pretrained_pair`` refuses a multimodal and a text
checkpoint that were not pretrained together (other seed, config or data: e.g. two
``mrd pretrain`` runs with other seeds on one run directory); ``chain_problems`` says where
the chain distill -> partition -> pretrain of a run directory is broken, for ``evaluate``
to mark.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mrd_cli.config import model_in_use
from mrd_cli.core.rundir import ROLES, RunDir
from mrd_cli.errors import MRDError
from mrd_cli.io import MAX_JSON_BYTES, file_sha256, read_limited

# The config sections both pretrained models must share (the seed is compared apart).
PAIR_SECTIONS = ("dataset", "model", "pretrain")


def pair_differences(multi: dict[str, Any], text: dict[str, Any]) -> list[str]:
    """How two pretrained checkpoints' records differ (empty when made together)."""
    diffs = []
    if multi.get("seed") != text.get("seed"):
        diffs.append(f"seed ({multi.get('seed')} vs {text.get('seed')})")
    if multi.get("data_fingerprint") != text.get("data_fingerprint"):
        diffs.append("data fingerprint")
    made = {
        r: c.get("config") if isinstance(c.get("config"), dict) else {}
        for r, c in (("multi", multi), ("text", text))
    }
    for section in PAIR_SECTIONS:
        a, b = made["multi"].get(section), made["text"].get(section)
        if section == "model":  # the settings of unused backbones play no part
            a, b = model_in_use(a), model_in_use(b)
        if a != b:
            keys = (
                sorted(
                    k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k)
                )
                if isinstance(a, dict) and isinstance(b, dict)
                else []
            )
            where = ", ".join(
                f"{section}.{k} ({(a or {}).get(k)!r} vs {(b or {}).get(k)!r})" for k in keys[:3]
            )
            diffs.append(where or f"config section '{section}'")
    return diffs


def settings_differences(
    ckpt: dict[str, Any], config: dict[str, Any], fingerprint: str
) -> list[str]:
    """How a checkpoint's record differs from the settings of this run (config as a dict)."""
    now = {"seed": config.get("seed"), "data_fingerprint": fingerprint, "config": config}
    return pair_differences(ckpt, now)


def check_pretrained_pair(ckpts: dict[str, dict[str, Any]]) -> None:
    """Refuse a multimodal and a text checkpoint that were not pretrained together."""
    for role in ROLES:
        ckpt = ckpts[role]
        if ckpt.get("role") != role or ckpt.get("stage") != "pretrain":
            raise MRDError(
                f"{ckpt.get('path')} is the {ckpt.get('stage')} {ckpt.get('role')} model, not "
                f"the pretrained {role} model. Pass the checkpoints `mrd pretrain` wrote."
            )
    diffs = pair_differences(ckpts["multi"], ckpts["text"])
    if diffs:
        raise MRDError(
            f"The pretrained checkpoints {ckpts['multi'].get('path')} and "
            f"{ckpts['text'].get('path')} were not made together: they differ in "
            f"{'; '.join(diffs)}. Pretrain both in one run (`mrd pretrain` with one seed and "
            "config), then partition."
        )


def _partition_record(path: Path) -> dict[str, Any] | None:
    """The pretrained checkpoints' sha256 a partition file records (None if unreadable)."""
    try:
        doc = json.loads(read_limited(path, MAX_JSON_BYTES, "partition file"))
        recorded = doc["provenance"]["checkpoints"]
        return {r: recorded[r]["sha256"] for r in ROLES}
    except (MRDError, OSError, ValueError, KeyError, TypeError):
        return None


def chain_problems(run: RunDir, checkpoints: dict[str, dict[str, Any]]) -> list[str]:
    """Where distill -> partition -> pretrain is broken for the checkpoints ``evaluate`` got
    (keyed like ``distill/multi``; only the run directory's own ones are checked)."""
    problems: list[str] = []
    distilled = {n: c for n, c in checkpoints.items() if n.startswith("distill/")}
    pretrained = {n: c for n, c in checkpoints.items() if n.startswith("pretrain/")}
    if not distilled and len(pretrained) < 2:
        return problems
    if len(pretrained) == 2:
        diffs = pair_differences(pretrained["pretrain/multi"], pretrained["pretrain/text"])
        if diffs:
            problems.append(f"the pretrained models were not made together ({'; '.join(diffs)})")
    if not distilled:
        return problems
    part_sha = file_sha256(run.partition) if run.partition.is_file() else None
    for name, ckpt in distilled.items():
        made_from = ckpt.get("partition_sha256")
        if part_sha is None:
            problems.append(f"{name} was made from a partition that is no longer in the run")
        elif made_from != part_sha:
            problems.append(f"{name} was made from another partition than {run.partition}")
    shas = {c.get("partition_sha256") for c in distilled.values()}
    if len(shas) > 1:
        problems.append("the two distilled models were made from different partitions")
    if part_sha is not None:
        record = _partition_record(run.partition)
        for role in ROLES:
            path = run.pretrained(role)
            if record is None or not path.is_file() or record[role] != file_sha256(path):
                problems.append(
                    f"{run.partition} was not made from the pretrained {role} model in the run "
                    "(its sha256 differs), so the Δ columns would compare models that are not "
                    "related"
                )
    return problems

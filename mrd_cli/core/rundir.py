"""The run directory layout: what flows between the steps.

```
RUN/config.yaml  pretrain/{multi,text}.pt  partition.json  distill/{multi,text}.pt
    metrics/*.json  ablation/...  tune/...  plots/*.png|svg  report/*.md|tex
    selftrain/{multi,text}.pt  selftrain/rounds/...
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mrd_cli.config import Config
from mrd_cli.core.version import git_commit, mrd_version
from mrd_cli.io import atomic_write_bytes, atomic_write_text

ROLES = ("multi", "text")
# On a corpus whose only modality is text, M_multi sees what M_text sees and differs from
# it by its seed (``core/session.role_seed``): it is named for that, never "multimodal".
TEXT_ONLY_MULTI = "text model, second seed"


def role_labels(labels: dict[str, str], modalities: list[str] | None) -> dict[str, str]:
    """``labels`` of the two roles (``{"multi": ..., "text": ...}``), with M_multi's named
    ``TEXT_ONLY_MULTI`` when the modalities M_multi sees are text alone."""
    if modalities is not None and list(modalities) == ["text"]:
        return {**labels, "multi": TEXT_ONLY_MULTI}
    return dict(labels)


def run_modalities(root: Path) -> list[str] | None:
    """The modalities of the run directory's saved config (``dataset.modalities``), None
    when it has no readable config."""
    from mrd_cli.config import load_yaml_text

    try:
        doc = load_yaml_text((Path(root) / "config.yaml").read_text())
        modalities = doc["dataset"]["modalities"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    except Exception:  # a damaged YAML file names no modality either
        return None
    return [str(m) for m in modalities] if isinstance(modalities, list) else None


# What distillation reads from a run directory: the pretrained pair and its partition.
DISTILL_INPUTS = ("pretrain/multi.pt", "pretrain/text.pt", "partition.json")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def pretrained(self, role: str) -> Path:
        return self.root / "pretrain" / f"{role}.pt"

    def distilled(self, role: str) -> Path:
        return self.root / "distill" / f"{role}.pt"

    @property
    def selftrain_dir(self) -> Path:
        return self.root / "selftrain"

    def selftrained(self, role: str) -> Path:
        """`mrd selftrain`'s result for ``role`` (a copy of its chosen round)."""
        return self.selftrain_dir / f"{role}.pt"

    def selftrain_round(self, role: str, r: int) -> Path:
        return self.selftrain_dir / "rounds" / f"{role}.round{r}.pt"

    def training_state(self, stage: str, role: str) -> Path:
        """Per-epoch resumable state (model, optimizer, RNG, best so far)."""
        return self.root / stage / f".{role}.state.pt"

    @property
    def partition(self) -> Path:
        return self.root / "partition.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def ablation(self) -> Path:
        return self.root / "ablation"

    @property
    def plots(self) -> Path:
        """Figures (``mrd plot``)."""
        return self.root / "plots"

    @property
    def report(self) -> Path:
        """Paper tables (``mrd report``)."""
        return self.root / "report"

    def checkpoints(self) -> dict[str, Path]:
        """Checkpoints present, named ``<stage>/<role>`` (pretrain/multi, distill/text,
        selftrain/multi, ...)."""
        found = {}
        for stage, path_of in self.stages():
            for role in ROLES:
                if path_of(role).is_file():
                    found[f"{stage}/{role}"] = path_of(role)
        return found

    def stages(self) -> tuple[tuple[str, Callable[[str], Path]], ...]:
        """(name, path of a role's checkpoint) of every step that writes checkpoints."""
        return (
            ("pretrain", self.pretrained),
            ("distill", self.distilled),
            ("selftrain", self.selftrained),
        )

    def save_config(self, cfg: Config) -> None:
        """``RUN/config.yaml``: the effective config, headed by a comment naming the code
        that wrote it (a comment, so the file still works as a ``--config``)."""
        header = f"# written by mrd {mrd_version()}, git commit {git_commit()}\n"
        atomic_write_text(self.config, header + cfg.to_yaml())

    def distill_inputs(self) -> dict[str, bytes]:
        """The files of ``DISTILL_INPUTS`` as bytes, by their path in the run directory:
        what a worker elsewhere needs to distil from this directory (``unpack``)."""
        return {rel: (self.root / rel).read_bytes() for rel in DISTILL_INPUTS}


def unpack(root: Path, files: dict[str, bytes]) -> RunDir:
    """A worker's own run directory at ``root`` (a temporary directory, not the run
    directory the driver writes) holding ``files`` (path -> bytes)."""
    for rel, data in files.items():
        atomic_write_bytes(root / rel, data)
    return RunDir(root)

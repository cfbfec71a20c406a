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
from mrd_cli.io import atomic_write_bytes, atomic_write_text

ROLES = ("multi", "text")
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
        atomic_write_text(self.config, cfg.to_yaml())

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

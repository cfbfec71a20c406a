"""The run directory layout: what flows between the steps.

```
RUN/config.yaml  pretrain/{multi,text}.pt  partition.json  distill/{multi,text}.pt
    metrics/*.json  ablation/...  tune/...  plots/*.png|svg  report/*.md|tex
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrd_cli.config import Config
from mrd_cli.io import atomic_write_text

ROLES = ("multi", "text")


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
        """Checkpoints present, named ``<stage>/<role>`` (pretrain/multi, distill/text, ...)."""
        found = {}
        for stage, path_of in (("pretrain", self.pretrained), ("distill", self.distilled)):
            for role in ROLES:
                if path_of(role).is_file():
                    found[f"{stage}/{role}"] = path_of(role)
        return found

    def save_config(self, cfg: Config) -> None:
        atomic_write_text(self.config, cfg.to_yaml())

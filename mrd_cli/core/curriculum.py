"""Curricula over the difficulty partition: which utterances are active in each epoch.

Reverse curriculum learning (RCL, Eq. 14) visits S = [difficult, general, simple]; the
classical (forward) curriculum the reverse order; "none" uses every utterance every epoch.
The models still see whole dialogues as context: the curriculum only decides which
utterances contribute to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrd_cli.core.groups import GROUP_CODE, GROUPS, STAGE_GROUPS
from mrd_cli.errors import MRDError

ORDERS = {
    "reverse": ("difficult", "general", "simple"),
    "forward": ("simple", "general", "difficult"),
}


@dataclass
class Curriculum:
    """Stage schedule over ``epochs`` distillation epochs.

    ``stages`` lists the stages in visiting order with their number of epochs; with
    ``cumulative`` a stage keeps the groups of the stages before it.
    """

    kind: str
    stages: list[tuple[str, int]]
    cumulative: bool
    skipped: list[str]

    @classmethod
    def build(
        cls,
        kind: str,
        epochs: int,
        stage_fractions: dict[str, float],
        cumulative: bool,
        group_sizes: dict[str, int],
    ) -> Curriculum:
        """Schedule ``epochs`` over the non-empty stages; empty stages are skipped (listed in
        ``skipped`` so the caller can warn) and their share goes to the others.

        ``stage_fractions`` maps each stage name (difficult, general, simple) to its share of
        the epochs, whatever the order the curriculum visits the stages in.
        """
        if set(stage_fractions) != set(ORDERS["reverse"]):
            raise MRDError(
                "stage_fractions must name exactly the stages difficult, general and simple; "
                f"got {', '.join(map(str, stage_fractions)) or 'none'}."
            )
        if kind == "none":
            return cls(kind, [("all", epochs)], cumulative, [])
        order = ORDERS[kind]
        fractions = dict(stage_fractions)
        size = {s: sum(group_sizes.get(g, 0) for g in STAGE_GROUPS[s]) for s in order}
        kept = [s for s in order if size[s] > 0]
        skipped = [s for s in order if size[s] == 0]
        if not kept:
            return cls(kind, [("all", epochs)], cumulative, skipped)
        weights = np.array([fractions[s] for s in kept], dtype=float)
        if weights.sum() == 0:
            weights[:] = 1.0
        bounds = np.round(np.cumsum(weights) / weights.sum() * epochs).astype(int)
        bounds[-1] = epochs
        counts = np.diff(np.concatenate([[0], bounds]))
        return cls(kind, [(s, int(n)) for s, n in zip(kept, counts) if n > 0], cumulative, skipped)

    def stage_at(self, epoch: int) -> int:
        """Index of the stage that 0-based ``epoch`` belongs to."""
        end = 0
        for i, (_, n) in enumerate(self.stages):
            end += n
            if epoch < end:
                return i
        return len(self.stages) - 1

    def active_groups(self, epoch: int) -> set[str]:
        """Partition groups whose utterances are trained on in 0-based ``epoch``."""
        i = self.stage_at(epoch)
        names = [s for s, _ in self.stages]
        if names[i] == "all":
            return set(GROUPS)
        visible = names[: i + 1] if self.cumulative else [names[i]]
        return {g for s in visible for g in STAGE_GROUPS[s]}

    def active_codes(self, epoch: int) -> np.ndarray:
        """Boolean [len(GROUPS)] vector: is each group code active in ``epoch``."""
        active = self.active_groups(epoch)
        return np.array([g in active for g in GROUP_CODE], dtype=bool)

    @property
    def last_stage_start(self) -> int:
        """Number of epochs before the last stage (early stopping may end training only
        within the last stage)."""
        return sum(n for _, n in self.stages[:-1])

    def describe(self) -> str:
        if self.kind == "none":
            return "none (all utterances every epoch)"
        parts = ", ".join(f"{s} x{n} epochs" for s, n in self.stages)
        mode = "cumulative" if self.cumulative else "exclusive"
        return f"{self.kind}, {mode}: {parts}"

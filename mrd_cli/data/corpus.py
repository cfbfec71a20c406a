"""The in-memory corpus every format reader produces and every later step consumes.

A ``Corpus`` holds one ``Dialogue`` per dialogue id (features per modality, speaker indices,
labels) and the train / val / test split. It knows nothing about files or tensors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from mrd_cli.errors import MRDError

SPLITS = ("train", "val", "test")


@dataclass
class Dialogue:
    """One conversation: ``n`` utterances, each with a speaker, a label and features."""

    id: str
    speakers: np.ndarray  # int64 [n], 0 .. num_speakers-1
    labels: np.ndarray  # int64 [n], 0 .. num_classes-1
    features: dict[str, np.ndarray]  # modality ("text", "audio", "visual") -> float32 [n, d]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Corpus:
    """A dataset ready for training: dialogues, split, label names and dimensions."""

    name: str
    label_names: list[str]
    dialogues: dict[str, Dialogue]
    splits: dict[str, list[str]]  # "train" / "val" / "test" -> dialogue ids, in order
    num_speakers: int
    # Where the validation split came from ("official dev split", "seeded 10% of train").
    val_source: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def modalities(self) -> list[str]:
        first = next(iter(self.dialogues.values()))
        return list(first.features)

    @property
    def input_dims(self) -> dict[str, int]:
        first = next(iter(self.dialogues.values()))
        return {m: int(x.shape[1]) for m, x in first.features.items()}

    def split(self, name: str) -> list[Dialogue]:
        return [self.dialogues[d] for d in self.splits[name]]

    def num_utterances(self, split: str) -> int:
        return sum(len(self.dialogues[d]) for d in self.splits[split])

    def fingerprint(self) -> str:
        """A short hash of labels, speakers, features and split: equal iff the data is equal.

        Checkpoints and partition files carry it so that files made from different data are
        never combined silently. Computed once per corpus (a corpus is not changed after
        loading).
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is not None:
            return cached
        h = hashlib.sha256()
        h.update(repr(self.label_names).encode())
        for split in SPLITS:
            h.update(f"|{split}:".encode())
            for did in self.splits[split]:
                d = self.dialogues[did]
                h.update(did.encode())
                h.update(np.ascontiguousarray(d.labels, dtype=np.int64).tobytes())
                h.update(np.ascontiguousarray(d.speakers, dtype=np.int64).tobytes())
                for m in sorted(d.features):
                    h.update(m.encode())
                    h.update(np.ascontiguousarray(d.features[m], dtype=np.float32).tobytes())
        self.__dict__["_fingerprint"] = h.hexdigest()[:16]
        return self.__dict__["_fingerprint"]

    def validate(self) -> None:
        """Refuse inconsistent data with a message naming the dialogue and what is wrong."""
        if not self.dialogues:
            raise MRDError(f"Dataset '{self.name}' contains no dialogues.")
        dims: dict[str, int] | None = None
        for did, d in self.dialogues.items():
            n = len(d.labels)
            if n == 0:
                raise MRDError(f"Dialogue '{did}' has no utterances.")
            if len(d.speakers) != n:
                raise MRDError(
                    f"Dialogue '{did}': {len(d.speakers)} speakers but {n} labels; every "
                    "utterance needs one speaker, one label and one feature row per modality."
                )
            bad = (d.labels < 0) | (d.labels >= self.num_classes)
            if bad.any():
                raise MRDError(
                    f"Dialogue '{did}': label {int(d.labels[bad][0])} is outside the "
                    f"{self.num_classes} classes of '{self.name}' ({', '.join(self.label_names)}). "
                    "Fix the labels in the file, or set dataset.label_names to its classes."
                )
            if (d.speakers < 0).any() or (d.speakers >= self.num_speakers).any():
                raise MRDError(f"Dialogue '{did}': speaker index out of range.")
            for m, x in d.features.items():
                if x.ndim != 2 or x.shape[0] != n:
                    raise MRDError(
                        f"Dialogue '{did}': modality '{m}' has shape {tuple(x.shape)}, "
                        f"expected ({n}, dim) for its {n} utterances."
                    )
                if not np.isfinite(x).all():
                    raise MRDError(
                        f"Dialogue '{did}': modality '{m}' contains NaN or Inf values; "
                        "clean the feature file before training."
                    )
            here = {m: x.shape[1] for m, x in d.features.items()}
            empty = [m for m, width in here.items() if width == 0]
            if empty:
                raise MRDError(
                    f"Dialogue '{did}': modality '{empty[0]}' has 0 features per utterance; "
                    "a model cannot learn from an empty feature vector. Use the complete "
                    "feature file, or leave the modality out of dataset.modalities."
                )
            if dims is None:
                dims = here
            elif here != dims:
                raise MRDError(
                    f"Dialogue '{did}': feature dimensions {here} differ from {dims} "
                    "in other dialogues."
                )
        for split in SPLITS:
            ids = self.splits.get(split, [])
            if not ids:
                raise MRDError(
                    f"Dataset '{self.name}': the {split} split is empty. Every split needs at "
                    "least one dialogue; check the split's id list in the feature files."
                )
            missing = [d for d in ids if d not in self.dialogues]
            if missing:
                raise MRDError(
                    f"Dataset '{self.name}': {len(missing)} dialogue id(s) of the {split} split "
                    f"are missing from the features (first: '{missing[0]}')."
                )

    def warnings(self) -> list[str]:
        """What is legal but probably not meant: classes that no training utterance has
        (their F1 can only be 0, and nothing is learned about them)."""
        present = set()
        for did in self.splits.get("train", []):
            present.update(int(y) for y in np.unique(self.dialogues[did].labels))
        absent = [name for i, name in enumerate(self.label_names) if i not in present]
        if not absent:
            return []
        return [
            f"Dataset '{self.name}': no training utterance has the class(es) "
            f"{', '.join(absent)}; the models cannot learn them and their F1 will be 0. "
            "Check the labels in the feature file and dataset.label_names."
        ]

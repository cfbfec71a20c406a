"""A corpus split as padded tensors on the device, built once per command.

Training and evaluation loop over *batches of dialogues* sliced from these tensors; nothing
loops over utterances or dialogues in Python. ``mask`` marks real utterances; padding never
reaches a loss or a metric.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mrd_cli.data.corpus import Corpus, Dialogue


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """Copy a small CPU tensor (batch indices) to ``device`` without waiting for the device.

    A plain copy to CUDA waits for the stream to drain; from pinned memory it is queued like
    any kernel, so building a batch never stalls the device. On the CPU it is a no-op.
    """
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


class BatchFeatures(Mapping[str, Tensor]):
    """A batch's features, modality -> [B, L, d], gathered from the split when first read.

    The utterance-level layers read only the real utterances: ``real_rows`` gathers those
    rows straight from the split, so a batch never copies its padded [B, L, d] block of
    wide features (audio 1582, RoBERTa 1024) only to pick rows out of it."""

    def __init__(self, source: Mapping[str, Tensor], index: Tensor, length: int):
        self._source = source  # modality -> [D, L_split, d]
        self._index = index  # [B] rows of the split, on its device
        self._length = length
        self._padded: dict[str, Tensor] = {}

    def __getitem__(self, m: str) -> Tensor:
        if m not in self._padded:
            self._padded[m] = self._source[m][self._index, : self._length]
        return self._padded[m]

    def __iter__(self) -> Iterator[str]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)

    def real_rows(self, m: str, real: Tensor) -> Tensor:
        """Rows ``real`` (flat indices into [B * L]) of modality ``m``, as a new [N, d]."""
        if m in self._padded:
            return self._padded[m].flatten(0, 1).index_select(0, real)
        src = self._source[m]
        rows = self._index[real // self._length] * src.shape[1] + real % self._length
        return src.reshape(-1, src.shape[-1]).index_select(0, rows)


def real_features(features: Mapping[str, Tensor], m: str, real: Tensor) -> Tensor:
    """Rows ``real`` (flat indices into [B * L]) of a batch's modality ``m`` [B, L, d], as a
    new [N, d] tensor (never a view: callers may work on it in place)."""
    if isinstance(features, BatchFeatures):
        return features.real_rows(m, real)
    return features[m].flatten(0, 1).index_select(0, real)


@dataclass
class Batch:
    """A batch of dialogues, trimmed to its longest dialogue."""

    index: Tensor  # [B] rows of the split these dialogues come from
    features: Mapping[str, Tensor]  # modality -> [B, L, d] (``BatchFeatures``: read lazily)
    speakers: Tensor  # [B, L] long
    labels: Tensor  # [B, L] long (0 at padding)
    mask: Tensor  # [B, L] bool, True for real utterances
    lengths: Tensor  # [B] long, on the CPU (what pack_padded_sequence needs)


@dataclass
class SplitTensors:
    """Every dialogue of one split, padded to the longest, on one device."""

    ids: list[str]
    features: dict[str, Tensor]  # modality -> [D, L, d] float32
    speakers: Tensor  # [D, L] long
    labels: Tensor  # [D, L] long
    mask: Tensor  # [D, L] bool
    lengths: Tensor  # [D] long, CPU

    @property
    def num_dialogues(self) -> int:
        return len(self.ids)

    @property
    def num_utterances(self) -> int:
        return int(self.lengths.sum())

    def to(self, device: torch.device) -> SplitTensors:
        return SplitTensors(
            ids=self.ids,
            features={m: x.to(device) for m, x in self.features.items()},
            speakers=self.speakers.to(device),
            labels=self.labels.to(device),
            mask=self.mask.to(device),
            lengths=self.lengths,
        )

    def select(self, modalities: list[str]) -> SplitTensors:
        """The same split with only ``modalities`` (no copy), so that batches gather no
        feature a model does not read."""
        return SplitTensors(
            ids=self.ids,
            features={m: self.features[m] for m in modalities},
            speakers=self.speakers,
            labels=self.labels,
            mask=self.mask,
            lengths=self.lengths,
        )

    def subset(self, rows: list[int] | np.ndarray) -> SplitTensors:
        """The dialogues at ``rows`` (e.g. one cross-fitting fold), still padded."""
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        length = int(self.lengths[idx].max()) if len(idx) else 0
        dev = self.mask.device
        didx = idx.to(dev)
        return SplitTensors(
            ids=[self.ids[i] for i in idx.tolist()],
            features={m: x[didx, :length] for m, x in self.features.items()},
            speakers=self.speakers[didx, :length],
            labels=self.labels[didx, :length],
            mask=self.mask[didx, :length],
            lengths=self.lengths[idx],
        )

    def batch(self, rows: Tensor) -> Batch:
        """Gather dialogues ``rows`` (a CPU long tensor) and trim to their longest."""
        lengths = self.lengths[rows]
        length = int(lengths.max())
        idx = to_device(rows, self.mask.device)
        return Batch(
            index=idx,
            features=BatchFeatures(self.features, idx, length),
            speakers=self.speakers[idx, :length],
            labels=self.labels[idx, :length],
            mask=self.mask[idx, :length],
            lengths=lengths,
        )

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        rows: Tensor | None = None,
    ) -> Iterator[Batch]:
        """Batches of ``batch_size`` dialogues; shuffled when a generator is given.

        Without a generator (evaluation) dialogues are sorted by length so that each batch
        carries little padding; the order of rows does not matter since every prediction is
        scattered back to its own row. ``rows`` (CPU long tensor) restricts the batches to
        those dialogues.
        """
        if rows is None:
            rows = torch.arange(self.num_dialogues)
        if generator is not None:
            order = rows[torch.randperm(len(rows), generator=generator)]
        else:
            order = rows[torch.argsort(self.lengths[rows], descending=True, stable=True)]
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size])


def pad_dialogues(dialogues: list[Dialogue], modalities: list[str]) -> SplitTensors:
    """Stack dialogues into padded CPU tensors (one numpy copy per modality, no Python per
    utterance)."""
    lengths = np.array([len(d) for d in dialogues], dtype=np.int64)
    num, length = len(dialogues), int(lengths.max())
    mask = np.arange(length)[None, :] < lengths[:, None]
    speakers = np.zeros((num, length), dtype=np.int64)
    labels = np.zeros((num, length), dtype=np.int64)
    speakers[mask] = np.concatenate([d.speakers for d in dialogues])
    labels[mask] = np.concatenate([d.labels for d in dialogues])
    features = {}
    for m in modalities:
        dim = dialogues[0].features[m].shape[1]
        x = np.zeros((num, length, dim), dtype=np.float32)
        x[mask] = np.concatenate([d.features[m] for d in dialogues])
        features[m] = torch.from_numpy(x)
    return SplitTensors(
        ids=[d.id for d in dialogues],
        features=features,
        speakers=torch.from_numpy(speakers),
        labels=torch.from_numpy(labels),
        mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(lengths),
    )


def split_tensors(
    corpus: Corpus, split: str, device: torch.device, modalities: list[str] | None = None
) -> SplitTensors:
    """One split of the corpus as padded tensors on ``device``."""
    mods = modalities if modalities is not None else corpus.modalities
    return pad_dialogues(corpus.split(split), mods).to(device)

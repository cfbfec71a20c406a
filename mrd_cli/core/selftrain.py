"""Building blocks of MER2024-SEMI's semi-supervised training (`mrd selftrain`): the label
budget, the diffusion-style noise, the contrastive loss and pseudo-label acceptance.

The loop that uses them is ``recipes/selftrain.py``. The unlabelled pool is built by
``hide_labels``, which replaces its labels by zeros before any training code sees it: a
hidden label cannot reach training, only the recipe's diagnostic reads it, from the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mrd_cli.core.losses import nt_xent
from mrd_cli.data.tensors import SplitTensors
from mrd_cli.labels import label_mapping
from mrd_cli.models.semi import SemiModel


@dataclass
class LabelBudget:
    """Which training dialogues keep their labels (rows of the training split)."""

    labelled: np.ndarray  # sorted row indices
    hidden: np.ndarray  # sorted row indices: the unlabelled pool of an inductive run


def label_budget(num_dialogues: int, fraction: float, seed: int) -> LabelBudget:
    """Keep the labels of round(fraction * D) training dialogues (at least one), drawn with
    ``seed``; the others' labels are hidden. Whole dialogues, never single utterances."""
    keep = min(num_dialogues, max(1, round(fraction * num_dialogues)))
    rng = np.random.default_rng(seed)
    labelled = np.sort(rng.permutation(num_dialogues)[:keep])
    hidden = np.setdiff1d(np.arange(num_dialogues), labelled)
    return LabelBudget(labelled=labelled, hidden=hidden)


def hide_labels(data: SplitTensors) -> SplitTensors:
    """The same dialogues with every label replaced by 0 (a copy; ``data`` is untouched)."""
    return SplitTensors(
        ids=data.ids,
        features=data.features,
        speakers=data.speakers,
        labels=torch.zeros_like(data.labels),
        mask=data.mask,
        lengths=data.lengths,
    )


def concat_splits(parts: list[SplitTensors]) -> SplitTensors:
    """The dialogues of several splits as one, padded to the longest."""
    parts = [p for p in parts if p.num_dialogues]
    length = max(p.mask.shape[1] for p in parts)

    def pad(x: Tensor) -> Tensor:
        extra = length - x.shape[1]
        if extra == 0:
            return x
        return torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], dim=1)

    return SplitTensors(
        ids=[i for p in parts for i in p.ids],
        features={m: torch.cat([pad(p.features[m]) for p in parts]) for m in parts[0].features},
        speakers=torch.cat([pad(p.speakers) for p in parts]),
        labels=torch.cat([pad(p.labels) for p in parts]),
        mask=torch.cat([pad(p.mask) for p in parts]),
        lengths=torch.cat([p.lengths for p in parts]),
    )


def noise_schedule(steps: int, beta_start: float, beta_end: float) -> Tensor:
    """abar_t = prod_{s <= t} (1 - beta_s) for t = 0..T-1, betas "scaled_linear":
    linspace(sqrt(beta_start), sqrt(beta_end), T)^2 (the original's schedule)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def diffuse(x: Tensor, abar_t: float, generator: torch.Generator) -> Tensor:
    """Forward diffusion of standardised features: sqrt(abar_t) x + sqrt(1 - abar_t) eps,
    eps ~ N(0, I) drawn on the CPU from ``generator`` (the same draws on every device)."""
    eps = torch.randn(x.shape, generator=generator).to(x.device)
    return abar_t**0.5 * x + (1.0 - abar_t) ** 0.5 * eps


def contrastive_loss(
    model: SemiModel,
    features: dict[str, Tensor],
    lengths: Tensor,
    length: int,
    abar: Tensor,
    temperature: float,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """MER2024-SEMI's pretraining loss on one batch, every term NT-Xent over its real
    utterances: ``modal``, the mean over pairs of modalities of NT-Xent(H^a, H^b) (absent
    with one modality), and ``noise``, the mean over modalities of NT-Xent(H^m, H~^m)
    between the original and the noised input (one t ~ U{0..T-1} per batch).
    ``total`` = modal + noise."""
    t = int(torch.randint(len(abar), (1,), generator=generator))
    a = float(abar[t])
    clean = model.embeddings(features, lengths, length)
    noisy = model.embeddings(features, lengths, length, noise=lambda x: diffuse(x, a, generator))
    mods = list(clean)
    noise = torch.stack([nt_xent(clean[m], noisy[m], temperature) for m in mods]).mean()
    pairs = [(p, q) for i, p in enumerate(mods) for q in mods[i + 1 :]]
    terms = {"noise": noise}
    if pairs:
        terms["modal"] = torch.stack(
            [nt_xent(clean[p], clean[q], temperature) for p, q in pairs]
        ).mean()
    else:
        terms["modal"] = noise.new_zeros(())
    terms["total"] = terms["modal"] + terms["noise"]
    return terms


def class_thresholds(
    label_names: list[str], thresholds: dict[str, float], default: float
) -> Tensor:
    """The threshold of each class [C], from the config's per-class mapping; a name that
    is not a class is refused (it would be a threshold silently never used)."""
    # Keys match classes as labels do everywhere (data/labels.py: case, white space and
    # Unicode form ignored).
    by_class = label_mapping(thresholds, label_names, "selftrain.thresholds")
    return torch.tensor([by_class.get(n, default) for n in label_names], dtype=torch.float32)


def accept_pseudo_labels(probs: Tensor, mask: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """Pseudo-labels [D, L] (the voted class) and which are accepted [D, L]: a real
    utterance whose voted probability of its predicted class exceeds that class's
    threshold (strictly, so a threshold of 1 accepts nothing)."""
    confidence, label = probs.max(-1)
    accepted = mask & (confidence > thresholds.to(probs.device)[label])
    return label, accepted

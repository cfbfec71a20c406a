"""MER2024-SEMI's network on dialogues: an encoder and a classifier head per modality, a
fused head, and soft voting over the heads (``model.backbone: semi``; `mrd selftrain`).

Per modality m, the standardised input goes through an encoder to H^m (the original applies
a Transformer encoder to a sequence of one token, which is a feed-forward block with layer
norms; here Linear-ReLU-Linear-LayerNorm, the same form without the length-1 attention).
Each H^m has its own classifier head; the fused head reads the concatenated H^m plus a
speaker embedding and, with ``context`` (mrd's extension), a bidirectional GRU over the
dialogue. The model's output is the soft vote: the log of the weighted mean of the heads'
softmax probabilities, so that ``softmax(output)`` is the voted distribution and its
maximum the voted confidence that pseudo-labelling thresholds. The heads' own
cross-entropy is the auxiliary loss ``heads``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mrd_cli.errors import MRDError
from mrd_cli.models.dialogue import Backbone, Dropout, ModelSpec, UtteranceLayout, gather, scatter

FUSED = "fused"


class SemiModel(Backbone):
    """Per-modality heads and a fused head, soft-voted; logits [B, L, C] (0 at padding)."""

    aux_weights = {"heads": 1.0}

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        h, c, p = spec.hidden, spec.num_classes, spec.dropout
        self.context_on = bool(spec.options.get("context", True))
        votes = dict(spec.options.get("vote_weights", {}))
        self.head_names = [*self.modalities, FUSED]
        self.vote = {name: float(votes.get(name, 0.0)) for name in self.head_names}
        if sum(self.vote.values()) <= 0:
            raise MRDError(
                f"model.semi.vote_weights gives weight 0 to every head this model has "
                f"({', '.join(self.head_names)}); give at least one a positive weight."
            )
        self.encode = nn.ModuleDict(
            {
                m: nn.Sequential(
                    Dropout(p),
                    nn.Linear(spec.input_dims[m], h),
                    nn.ReLU(),
                    nn.Linear(h, h),
                    nn.LayerNorm(h),
                )
                for m in self.modalities
            }
        )
        self.heads = nn.ModuleDict({m: _head(h, c, p) for m in self.modalities})
        self.fuse = nn.Sequential(nn.Linear(h * len(self.modalities), h), nn.ReLU())
        self.speaker = nn.Embedding(spec.num_speakers, h)
        self.dropout = Dropout(p)
        fused_in = h
        if self.context_on:
            self.context = nn.GRU(
                h, h // 2, num_layers=spec.layers, batch_first=True, bidirectional=True
            )
            fused_in = h + 2 * (h // 2)
        self.heads[FUSED] = _head(fused_in, c, p)
        self._last: tuple[dict[str, Tensor], Tensor] | None = None

    def embeddings(
        self,
        features: dict[str, Tensor],
        lengths: Tensor,
        length: int,
        noise: Callable[[Tensor], Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """H^m of the real utterances [N, hidden] per modality; ``noise`` (if given) is
        applied to the standardised inputs first (the noised view of contrastive
        pretraining)."""
        where = UtteranceLayout.of(lengths, length, next(self.parameters()).device)
        out = {}
        for m in self.modalities:
            x = self.standardised(features, m, where.real)
            out[m] = self.encode[m](noise(x) if noise is not None else x)
        return out

    def head_logits(
        self, features: dict[str, Tensor], speakers: Tensor, mask: Tensor, lengths: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Each head's logits over the real utterances [N, C], and their flat indices."""
        batch, length = mask.shape
        where = UtteranceLayout.of(lengths, length, mask.device)
        hidden = {}
        for m in self.modalities:
            hidden[m] = self.encode[m](self.standardised(features, m, where.real))
        logits = {m: self.heads[m](hidden[m]) for m in self.modalities}
        fused = self.fuse(torch.cat([hidden[m] for m in self.modalities], dim=-1))
        fused = self.dropout(fused + self.speaker(gather(speakers, where.real)))
        if self.context_on:
            padded = scatter(fused, where.longest_first, batch, length)
            packed = pack_padded_sequence(padded, where.sorted_lengths, batch_first=True)
            out, _ = self.context(packed)
            ctx, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
            fused = torch.cat([fused, gather(ctx, where.longest_first)], dim=-1)
        logits[FUSED] = self.heads[FUSED](fused)
        return logits, where.real

    def forward(
        self, features: dict[str, Tensor], speakers: Tensor, mask: Tensor, lengths: Tensor
    ) -> Tensor:
        batch, length = mask.shape
        logits, real = self.head_logits(features, speakers, mask, lengths)
        if self.training:
            self._last = (logits, real)
        return scatter(soft_vote(logits, self.vote), real, batch, length)

    def aux_losses(self, labels: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """``heads``: the mean over heads of each head's cross-entropy on the utterances
        ``mask`` marks (the original trains every head on the labels, besides the vote)."""
        if self._last is None:
            return {}
        logits, real = self._last
        y = gather(labels, real)
        w = gather(mask, real).float()
        terms = [
            (F.cross_entropy(lg, y, reduction="none") * w).sum() / w.sum().clamp_min(1.0)
            for lg in logits.values()
        ]
        return {"heads": torch.stack(terms).mean()}


def soft_vote(logits: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """log of sum_h w_h softmax(logits_h) / sum_h w_h: the soft vote, as logits whose
    softmax is the voted distribution."""
    total = sum(weights[h] for h in logits)
    probs = sum(weights[h] * F.softmax(lg, dim=-1) for h, lg in logits.items()) / total
    return probs.clamp_min(1e-12).log()


def _head(dim: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, dim), nn.ReLU(), Dropout(dropout), nn.Linear(dim, num_classes)
    )

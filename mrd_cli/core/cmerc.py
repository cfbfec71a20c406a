"""The loss terms of CMERC (Multimodal Emotion Recognition Calibration in Conversations,
ACM MM 2024), as functions of a model's outputs and those of its masked variants.

CMERC trains M3Net beside frozen copies of itself that see less: each modality replaced by
its mean over the dialogue (text, audio, visual), and the graph without intra-speaker or
without inter-speaker edges (context). For each variant v and utterance i of class y_i,
with log-probabilities p (the model) and q_v (the variant):

- calibration ranking (``rank_coff``): ``sum_v sum_i max(0, q_v[i, y_i] - p[i, y_i])``,
  summed, not averaged: the model should be at least as sure of the truth as a variant
  that sees less;
- supervised contrastive across modalities (``mscl_coff``, v in text/audio/visual) and
  across context (``cscl_coff``, v in intra/inter): each utterance gets the binary target
  ``t_v[i] = 1`` if the model is right and either the variant is wrong or less sure of the
  truth, else 0 (``contrast_targets``), and the utterance features are pulled together by
  these targets (``scl_log_ratio``, ``weighted_scl``).

These are the building blocks only: ``pretrain.objective: cmerc`` (the variants during
training, the course learning over a per-conversation difficulty) is not wired yet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TEMPERATURE = 0.07  # the published contrastive temperature
EPS = 1e-7  # the published offset added to the same-target mask


def calibration_rank_loss(logp: Tensor, variants: list[Tensor], labels: Tensor) -> Tensor:
    """``sum_v sum_i relu(q_v[i, y_i] - p[i, y_i])`` for log-probabilities ``logp`` [N, C]
    and each variant's ``variants[v]`` [N, C] (no gradient flows into a variant)."""
    own = logp.gather(1, labels[:, None])[:, 0]
    total = logp.new_zeros(())
    for q in variants:
        total = total + F.relu(q.detach().gather(1, labels[:, None])[:, 0] - own).sum()
    return total


@torch.no_grad()
def contrast_targets(logp: Tensor, variant: Tensor, labels: Tensor) -> Tensor:
    """The binary target of each utterance against one variant: 1 where the model predicts
    the truth and the variant does not, or both do and the model is surer of it; else 0."""
    right = logp.argmax(1) == labels
    v_right = variant.argmax(1) == labels
    surer = logp.gather(1, labels[:, None])[:, 0] > variant.gather(1, labels[:, None])[:, 0]
    return (right & (~v_right | surer)).long()


def target_weights(targets: Tensor) -> Tensor:
    """Per utterance, ``n / n_t`` for its target t (n utterances, n_t of them with t)."""
    counts = torch.bincount(targets, minlength=2).to(torch.float32)
    return (len(targets) / counts.clamp(min=1))[targets]


def scl_log_ratio(features: Tensor, targets: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """Per utterance i: ``log(pos_i / (pos_i + neg_i))`` with ``s_ij = exp(cos(f_i, f_j) / tau)``,
    ``pos_i = sum_{j != i} m_ij s_ij``, ``neg_i = sum_{j != i} (1 - m_ij) s_ij`` and
    ``m_ij = 1[t_i = t_j] + 1e-7`` (the published offset)."""
    f = F.normalize(features, dim=1)
    sim = torch.exp(f @ f.t() / temperature)
    same = (targets[:, None] == targets[None, :]).to(sim.dtype) + EPS
    off = 1.0 - torch.eye(len(f), dtype=sim.dtype, device=f.device)
    pos = (sim * same * off).sum(1)
    neg = (sim * (1.0 - same) * off).sum(1)
    return torch.log(pos / (pos + neg))


def weighted_scl(features: Tensor, targets: list[Tensor]) -> Tensor:
    """``-mean_i sum_v w_v[i] * scl_log_ratio(features, t_v)[i]`` with ``w_v = target_weights(t_v)``;
    0 when that is not finite (a batch of one utterance), as published."""
    terms = [target_weights(t) * scl_log_ratio(features, t) for t in targets]
    loss = -torch.stack(terms).sum(0).mean()
    return torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))

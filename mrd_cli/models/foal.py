"""Foal-Net (Interspeech 2024): alignment of audio and visual before their fusion.

The original network works on frames of one utterance; the community features hold one
vector per utterance and modality, in dialogues. What carries over unchanged, and what mrd
adapts (every adaptation is also listed in the README's backbone section):

- **Input maps**: audio and visual are each mapped linearly to ``hidden`` (dropout first).
  The original fine-tunes its audio encoder (WavLM), so AVEL shapes what the fusion sees;
  with fixed features these maps are the trainable counterpart, and AVEL acts on them.
- **Projection blocks** ``h1 = W1 x; LN(h1 + Dropout0.5(W2 GELU(h1)))`` without biases,
  ``hidden -> hidden`` (the paper: 512) on the input maps, for AVEL.
- **AVEL** (``avel_loss``): label-supervised contrastive alignment of audio and visual,
  ``S = p_a p_v^T / tau`` with a learnable divisor ``tau`` (initialised to log(1/0.07)),
  targets ``1[y_i = y_j]`` summed without normalisation, both directions averaged. Computed
  over every real utterance of the batch. One change by default (``clip_temperature``):
  the original initialises ``tau`` to CLIP's logit scale log(1/0.07) but divides by it, so
  every similarity stays within +-0.38 and AVEL hardly moves (measured: it does not fall);
  mrd multiplies by ``exp(tau)`` as CLIP does (14.3 at the start, at most 100), the
  evident intent of that initial value. ``clip_temperature: false`` restores the literal
  divisor (kept above 0.01; the original leaves it unclamped). ``avel_normalise`` divides
  each row by its positives.
- **Cross-attention stacks**, ``layers`` each way (audio queries over visual keys, and the
  reverse): linear Q/K/V, scaled dot-product with a key mask, output projection, dropout
  0.1, residual + LayerNorm, no feed-forward sublayer. The sequence they attend over is the
  **utterances of the dialogue** (the original: the frames of one utterance), and both
  inputs are first mapped linearly to ``hidden`` (the original attends at the raw feature
  widths, 1024 and 768, from the same features AVEL sees).
- **MEM** (``mem_negatives``, ``mem_loss``): audio-visual matching with hard negatives of
  another label, drawn from the softmax of the AVEL similarities; each pair runs through the
  same cross-attention stacks as single utterances (one key), then a 2-way head per
  direction. Weight 0.1, as in the original code. With one key the attention weight is 1
  and a layer gives ``LN(q + W k)``: the head sees a sum rather than an interaction of the
  pair, so MEM stays near the entropy of its 1:2 target mix (0.637).
- **Classifier** on the two stacks' outputs of each utterance. With ``text`` (mrd's
  extension; the paper is audio + visual only) the text vector, mapped to ``hidden``, is
  concatenated there too.
- The original's class-balanced sampler becomes pretraining's class-weighted loss (dialogues,
  not utterances, are batched), and epochs are chosen on validation, not on the test
  session. Speakers are not used, as in the original.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrd_cli.models.dialogue import (
    Backbone,
    Dropout,
    ModelSpec,
    UtteranceLayout,
    gather,
    scatter,
)

TAU_INIT = math.log(1 / 0.07)  # 2.659, used as a divisor as in the original code
TAU_MIN = 0.01


def avel_loss(
    z_a: Tensor, z_v: Tensor, labels: Tensor, scale: Tensor, normalise: bool = False
) -> Tensor:
    """AVEL: label-supervised audio-visual contrastive loss of Foal-Net.

    ``z_a``, ``z_v`` [N, H] are the projected audio and visual vectors of N utterances,
    ``labels`` [N] their classes, ``scale`` the inverse temperature (the original: 1 / tau).
    With ``p = z / |z|`` and ``S = scale p_a p_v^T``:
    ``L = 1/2 [-1/N sum_ij Y_ij log softmax_j(S)_ij - 1/N sum_ij Y_ij log softmax_j(S^T)_ij]``
    with ``Y_ij = 1[y_i = y_j]``; with ``normalise`` each row of Y is divided by its number
    of positives (SupCon-style, an option).
    """
    sim = foal_similarity(z_a, z_v, scale)
    y = (labels[:, None] == labels[None, :]).to(sim.dtype)
    if normalise:
        y = y / y.sum(1, keepdim=True)
    a2v = -(y * F.log_softmax(sim, dim=1)).sum(1).mean()
    v2a = -(y * F.log_softmax(sim.t(), dim=1)).sum(1).mean()
    return (a2v + v2a) / 2


def foal_similarity(z_a: Tensor, z_v: Tensor, scale: Tensor) -> Tensor:
    """``S = scale norm(z_a) norm(z_v)^T`` [N, N]."""
    return scale * (F.normalize(z_a, dim=-1) @ F.normalize(z_v, dim=-1).t())


@torch.no_grad()
def mem_negatives(sim: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """MEM's hard negatives: for each audio i a visual of another label drawn with
    probability softmax(S_i) over the other labels (same-label entries set to -10000, as in
    the original), and for each visual j an audio likewise from S^T. Returns (visual index
    per audio, audio index per visual), each [N]. A batch of one label can only draw
    same-label partners, as in the original code."""
    same = labels[:, None] == labels[None, :]
    masked = sim.masked_fill(same, -10000.0)
    neg_v = torch.multinomial(F.softmax(masked, dim=1), 1).squeeze(1)
    neg_a = torch.multinomial(F.softmax(masked.t(), dim=1), 1).squeeze(1)
    return neg_v, neg_a


def mem_loss(logits_a2v: Tensor, logits_v2a: Tensor, targets: Tensor) -> Tensor:
    """MEM: the matching loss ``(CE(a2v) + CE(v2a)) / 2`` of audio-visual pairs, where
    ``logits_*`` [P, 2] are the two heads' outputs and ``targets`` [P] is 1 for a matching
    pair, 0 for a negative."""
    return (F.cross_entropy(logits_a2v, targets) + F.cross_entropy(logits_v2a, targets)) / 2


class ProjectionBlock(nn.Module):
    """Foal-Net's projection: ``h1 = W1 x; LN(h1 + Dropout0.5(W2 GELU(h1)))``, no biases."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.w1 = nn.Linear(dim_in, dim_out, bias=False)
        self.w2 = nn.Linear(dim_out, dim_out, bias=False)
        self.drop = nn.Dropout(0.5)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        h1 = self.w1(x)
        return self.norm(h1 + self.drop(self.w2(F.gelu(h1))))


class CrossAttentionLayer(nn.Module):
    """``LN(q + Dropout0.1(Attention(q, kv, kv)))``: Foal-Net's layer, no feed-forward."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.drop = nn.Dropout(0.1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, q: Tensor, kv: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        out, _ = self.attn(q, kv, kv, key_padding_mask=key_padding_mask, need_weights=False)
        return self.norm(q + self.drop(out))


class CrossAttentionStack(nn.ModuleList):
    """``layers`` cross-attention layers; the query is refined, the keys stay the input."""

    def __init__(self, dim: int, heads: int, layers: int):
        super().__init__(CrossAttentionLayer(dim, heads) for _ in range(layers))

    def forward(self, q: Tensor, kv: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        for layer in self:
            q = layer(q, kv, key_padding_mask)
        return q


class FoalNet(Backbone):
    """Foal-Net over the utterances of a dialogue; logits [B, L, C] (0 at padding).

    ``spec.options``: ``text`` (bool, mrd's A+V+T extension), ``layers`` (cross-attention
    layers each way), ``avel_weight``, ``mem_weight``, ``avel_normalise``,
    ``clip_temperature``.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        o = spec.options
        h, dims = spec.hidden, spec.input_dims
        self.use_text = bool(o.get("text", False))
        self.normalise = bool(o.get("avel_normalise", False))
        self.clip_temperature = bool(o.get("clip_temperature", False))
        self.aux_weights = {
            "avel": float(o.get("avel_weight", 1.0)),
            "mem": float(o.get("mem_weight", 0.1)),
        }
        layers = int(o.get("layers", 2))
        self.embed = nn.ModuleDict(
            {
                m: nn.Sequential(Dropout(spec.dropout), nn.Linear(dims[m], h))
                for m in ("audio", "visual")
            }
        )
        self.a2v = CrossAttentionStack(h, spec.heads, layers)
        self.v2a = CrossAttentionStack(h, spec.heads, layers)
        self.proj_a = ProjectionBlock(h, h)
        self.proj_v = ProjectionBlock(h, h)
        self.tau = nn.Parameter(torch.tensor(TAU_INIT))
        self.match_a2v = nn.Linear(h, 2)
        self.match_v2a = nn.Linear(h, 2)
        width = 2 * h
        if self.use_text:
            self.embed_text = nn.Sequential(
                Dropout(spec.dropout), nn.Linear(dims["text"], h), nn.ReLU()
            )
            width += h
        self.classify = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(width, spec.num_classes))
        self._last: dict[str, Tensor] | None = None

    def forward(
        self, features: dict[str, Tensor], speakers: Tensor, mask: Tensor, lengths: Tensor
    ) -> Tensor:
        batch, length = mask.shape
        real = UtteranceLayout.of(lengths, length, mask.device).real
        xa = self.standardised(features, "audio", real)
        xv = self.standardised(features, "visual", real)
        ea, ev = self.embed["audio"](xa), self.embed["visual"](xv)  # [N, H]
        pa, pv = scatter(ea, real, batch, length), scatter(ev, real, batch, length)
        pad = ~mask
        parts = [
            gather(self.a2v(pa, pv, pad), real),
            gather(self.v2a(pv, pa, pad), real),
        ]
        if self.use_text:
            parts.append(self.embed_text(self.standardised(features, "text", real)))
        logits = self.classify(torch.cat(parts, dim=-1))
        self._last = {"real": real, "ea": ea, "ev": ev} if self.training else None
        return scatter(logits, real, batch, length)

    def avel_scale(self) -> Tensor:
        """AVEL's inverse temperature: with ``clip_temperature`` (the default) CLIP's
        ``exp(tau)`` (starts at 1/0.07 = 14.3, at most 100); without it ``1 / tau`` as the
        original code literally computes it (tau starts at 2.659, so similarities stay
        within +-0.38)."""
        if self.clip_temperature:
            return self.tau.clamp(max=math.log(100.0)).exp()
        return 1.0 / self.tau.clamp_min(TAU_MIN)

    def aux_losses(self, labels: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """AVEL and MEM of the last training forward call."""
        if self._last is None:
            raise RuntimeError("aux_losses needs a forward call in training mode first")
        last, self._last = self._last, None
        y = gather(labels, last["real"])
        scale = self.avel_scale()
        # On the input maps that feed the cross-attention: the trainable counterpart of the
        # original's fine-tuned encoders, so that the alignment shapes what is fused.
        z_a, z_v = self.proj_a(last["ea"]), self.proj_v(last["ev"])
        l_avel = avel_loss(z_a, z_v, y, scale, self.normalise)
        neg_v, neg_a = mem_negatives(foal_similarity(z_a, z_v, scale), y)
        ea, ev = last["ea"], last["ev"]
        n = len(y)
        # Matching pairs, (audio, negative visual), (negative audio, visual): one key each.
        qa = torch.cat([ea, ea, ea[neg_a]])[:, None]
        qv = torch.cat([ev, ev[neg_v], ev])[:, None]
        targets = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(y.device)
        l_mem = mem_loss(
            self.match_a2v(self.a2v(qa, qv)[:, 0]), self.match_v2a(self.v2a(qv, qa)[:, 0]), targets
        )
        return {"avel": l_avel, "mem": l_mem}

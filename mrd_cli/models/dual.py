"""DUAL (Dynamic Unified Alignment for Low-text dependency), as mrd builds it.

DUAL has no published paper or working code: its only public description is a figure and
a README. The figure fixes the parts (audio and visual encoders into a shared space, SDM,
VDM, static and dynamic alignment, the sentiment residual, a cross-attention decoder over the
text); **every loss form, weight, size and order below is mrd's own choice**, untuned:

- Encoders: each of audio and visual is mapped to ``hidden`` (dropout, linear, ReLU).
- The community features have no frames, so the differences run **across the utterances of
  a dialogue** (turns, not frames: they model emotion shift).
  SDM: a gated (LSTM) recurrence in dialogue order whose input at utterance t is the pair
  (a_{t-1}, a_t) (a_{-1} = a_0). VDM: v_{t+1} - v_t, the last utterance passed through
  (uses the next utterance, fine offline); ``causal``: v_t - v_{t-1}, the first passed
  through.
- Static alignment (``static_alignment_loss``): symmetric InfoNCE between each utterance's
  audio and visual vectors (cosine, learnable scale initialised to 1/0.07, at most 100),
  over every real utterance of the batch. Dynamic alignment (``dynamic_alignment_loss``):
  the same between SDM and VDM outputs. Weights 1 and 1.
- Sentiment residual: per modality, [original; difference] -> linear + ReLU, added to the
  original; the two meet in the shared latent ``z = LN(r_a + r_v)``.
- Decoder: ``layers`` Transformer decoder layers whose queries are the dialogue's latents
  and whose memory is the dialogue's text (mapped to ``hidden``), sinusoidal positions on
  both; text enters only here. A linear classifier on its output.
- ``difference: false`` drops SDM, VDM, the residual and the dynamic loss (z = LN(a + v)).
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
    positions,
    scatter,
)

SCALE_INIT = math.log(1 / 0.07)  # log of the initial inverse temperature (CLIP's)
SCALE_MAX = math.log(100.0)


def info_nce(x: Tensor, y: Tensor, log_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of paired rows: ``S = exp(log_scale) norm(x) norm(y)^T``,
    ``(CE(S, I) + CE(S^T, I)) / 2`` where row i's positive is column i."""
    sim = log_scale.clamp(max=SCALE_MAX).exp() * (
        F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).t()
    )
    target = torch.arange(len(x), device=x.device)
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target)) / 2


def static_alignment_loss(audio: Tensor, visual: Tensor, log_scale: Tensor) -> Tensor:
    """DUAL's static alignment: each utterance's audio [N, H] with its own visual [N, H]
    against the other utterances' (symmetric InfoNCE; the form is mrd's choice)."""
    return info_nce(audio, visual, log_scale)


def dynamic_alignment_loss(sdm: Tensor, vdm: Tensor, log_scale: Tensor) -> Tensor:
    """DUAL's dynamic (difference) alignment: each utterance's SDM output [N, H] with its
    own VDM output [N, H] (symmetric InfoNCE; the form is mrd's choice)."""
    return info_nce(sdm, vdm, log_scale)


def visual_difference(v: Tensor, lengths: Tensor, causal: bool = False) -> Tensor:
    """VDM over a padded dialogue batch ``v`` [B, L, H] (zeros at padding): ``v_{t+1} - v_t``
    with each dialogue's last utterance passed through, or with ``causal`` ``v_t - v_{t-1}``
    with the first passed through. Padding never reaches a real utterance's difference."""
    zero = torch.zeros_like(v[:, :1])
    if causal:
        return v - torch.cat([zero, v[:, :-1]], dim=1)  # the first: v_0 - 0
    d = torch.cat([v[:, 1:], zero], dim=1) - v
    steps = torch.arange(v.shape[1], device=v.device)
    last = steps[None, :] == (lengths.to(v.device) - 1)[:, None]
    return torch.where(last[..., None], v, d)


class DualModel(Backbone):
    """DUAL over the utterances of a dialogue; logits [B, L, C] (0 at padding).

    ``spec.options``: ``difference`` (bool: SDM/VDM and the residual), ``causal`` (VDM
    direction), ``static_weight``, ``dynamic_weight``.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        o = spec.options
        h, dims = spec.hidden, spec.input_dims
        self.difference = bool(o.get("difference", True))
        self.causal = bool(o.get("causal", False))
        self.aux_weights = {"static": float(o.get("static_weight", 1.0))}
        if self.difference:
            self.aux_weights["dynamic"] = float(o.get("dynamic_weight", 1.0))
        self.encode = nn.ModuleDict(
            {
                m: nn.Sequential(Dropout(spec.dropout), nn.Linear(dims[m], h), nn.ReLU())
                for m in ("audio", "visual", "text")
            }
        )
        self.static_scale = nn.Parameter(torch.tensor(SCALE_INIT))
        if self.difference:
            self.sdm = nn.LSTM(2 * h, h, batch_first=True)
            self.residual = nn.ModuleDict(
                {m: nn.Sequential(nn.Linear(2 * h, h), nn.ReLU()) for m in ("audio", "visual")}
            )
            self.dynamic_scale = nn.Parameter(torch.tensor(SCALE_INIT))
        self.norm = nn.LayerNorm(h)
        layer = nn.TransformerDecoderLayer(
            h, spec.heads, dim_feedforward=2 * h, dropout=spec.dropout, batch_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=spec.layers)
        self.classify = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(h, spec.num_classes))
        self._last: dict[str, Tensor] | None = None

    def forward(
        self, features: dict[str, Tensor], speakers: Tensor, mask: Tensor, lengths: Tensor
    ) -> Tensor:
        batch, length = mask.shape
        real = UtteranceLayout.of(lengths, length, mask.device).real

        def encoded(m: str) -> Tensor:
            x = self.encode[m](self.standardised(features, m, real))
            return scatter(x, real, batch, length)  # [B, L, H], zeros at padding

        a, v, t = encoded("audio"), encoded("visual"), encoded("text")
        last: dict[str, Tensor] = {"real": real, "a": gather(a, real), "v": gather(v, real)}
        if self.difference:
            # SDM: a forward recurrence, so padding (after the real utterances) never
            # reaches them; VDM: differences within each dialogue.
            pairs = torch.cat([torch.cat([a[:, :1], a[:, :-1]], dim=1), a], dim=-1)
            s, _ = self.sdm(pairs)
            d = visual_difference(v, lengths, self.causal)
            r_a = a + self.residual["audio"](torch.cat([a, s], dim=-1))
            r_v = v + self.residual["visual"](torch.cat([v, d], dim=-1))
            last.update(s=gather(s, real), d=gather(d, real))
        else:
            r_a, r_v = a, v
        z = self.norm(r_a + r_v)
        pad = ~mask
        out = self.decoder(
            z + positions(z),
            t + positions(t),
            tgt_key_padding_mask=pad,
            memory_key_padding_mask=pad,
        )
        logits = self.classify(gather(out, real))
        self._last = last if self.training else None
        return scatter(logits, real, batch, length)

    def aux_losses(self, labels: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Static (and, with the difference modules, dynamic) alignment of the last training
        forward call. Labels are not used: both align each utterance with itself."""
        if self._last is None:
            raise RuntimeError("aux_losses needs a forward call in training mode first")
        last, self._last = self._last, None
        out = {"static": static_alignment_loss(last["a"], last["v"], self.static_scale)}
        if self.difference:
            out["dynamic"] = dynamic_alignment_loss(last["s"], last["d"], self.dynamic_scale)
        return out

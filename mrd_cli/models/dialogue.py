"""The speaker-aware dialogue network used for both M_multi and M_text.

Per-modality input standardisation and projection, fusion of the modalities, a speaker
embedding, a context encoder over the whole dialogue (bidirectional GRU, or a Transformer
encoder), and a classifier. The text model is the same network built with ``["text"]``.
Padding never changes the prediction of a real utterance: the GRU runs each dialogue over
its own length only (on the CPU as one recurrence for both directions, ``models.gru``;
elsewhere ``nn.GRU`` on packed sequences) and the Transformer masks padded keys. Everything that works utterance by utterance (input
standardisation, dropout, projection, fusion, classifier) runs on the real utterances only,
gathered from the padded batch: padding costs nothing there. Dropout on the wide audio and
RoBERTa inputs was the most expensive step of a CPU epoch, hence ``Dropout`` below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mrd_cli.data.tensors import real_features, to_device
from mrd_cli.models.gru import StepLayout, bidirectional_gru


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask costs a quarter as much; elsewhere exactly nn.Dropout.

    On the CPU, ``nn.Dropout`` draws one 32-bit random number per element, and for inputs
    1582 (audio) and 1024 (RoBERTa) wide that dominated a training epoch. Here each 64-bit
    draw of torch's generator gives four 16-bit uniforms, so an element is dropped with
    probability ``p`` rounded to a multiple of 1/65536 (0.5 exactly; 0.4 as 0.399994), and
    the kept ones are scaled by the exact 1 / (1 - p) of that rounded ``p``. Deterministic
    given torch's seed, like nn.Dropout.
    """

    def forward(self, x: Tensor) -> Tensor:
        return self.same_mask([x])[0]

    def same_mask(self, xs: list[Tensor]) -> list[Tensor]:
        """Each of ``xs`` (one shape, on the CPU) dropped out with one mask, the one
        ``forward`` would draw for the first: several networks under the same dropout."""
        keep = keep_level(self.p)
        if not self.training or keep in (0, 65536) or xs[0].device.type != "cpu":
            if len(xs) > 1 and self.training and 0 < keep < 65536:
                raise ValueError("one dropout mask for several tensors is drawn on the CPU only")
            return [super(Dropout, self).forward(x) for x in xs]
        kept = keep_mask(xs[0].shape, keep)
        if self.inplace:
            return [x.mul_(kept).mul_(65536 / keep) for x in xs]
        return [x * kept * (65536 / keep) for x in xs]


def keep_level(p: float) -> int:
    """``Dropout``'s keep probability 1 - p, in 65536ths."""
    return round((1.0 - p) * 65536)


def keep_mask(
    shape: tuple[int, ...], keep: int, generator: torch.Generator | None = None
) -> Tensor:
    """The bool keep mask of ``Dropout`` on the CPU: four 16-bit uniforms from each 64-bit
    draw of ``generator`` (torch's global one when None), kept below ``keep`` / 65536."""
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None, generator=generator)
    uniform16 = bits.view(torch.int16)[:n].view(shape)  # uniform on [-32768, 32767]
    return uniform16 < keep - 32768


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model from a checkpoint."""

    modalities: list[str]
    input_dims: dict[str, int]
    num_speakers: int
    num_classes: int
    hidden: int = 128
    encoder: str = "gru"
    layers: int = 1
    heads: int = 4
    dropout: float = 0.5
    # Which network the spec builds (``models/registry.py``) and that network's own
    # settings; a checkpoint without them is a dialogue network.
    backbone: str = "dialogue"
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Backbone(nn.Module):
    """What every network of the registry shares: the spec, input standardisation, and the
    auxiliary-loss interface of the pretraining loop.

    ``forward(features, speakers, mask, lengths)`` returns logits [B, L, C], 0 at padding.
    A network with auxiliary losses lists them in ``aux_weights`` (name -> weight) and, in
    training mode, keeps what they need from its last forward call; ``aux_losses(labels,
    mask)`` then returns each term, unweighted, by name. The dialogue network has none.
    """

    aux_weights: dict[str, float] = {}

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.modalities = list(spec.modalities)
        for m in self.modalities:
            # Standardisation statistics from the training split (set_input_stats); the
            # community audio features span several orders of magnitude.
            self.register_buffer(f"mean_{m}", torch.zeros(spec.input_dims[m]))
            self.register_buffer(f"std_{m}", torch.ones(spec.input_dims[m]))

    @torch.no_grad()
    def set_input_stats(self, features: dict[str, Tensor], mask: Tensor) -> None:
        """Standardise each input feature with its mean / std over real training utterances."""
        for m in self.modalities:
            x = features[m][mask]
            getattr(self, f"mean_{m}").copy_(x.mean(0))
            getattr(self, f"std_{m}").copy_(x.std(0).clamp_min(1e-5))

    def standardised(self, features: Mapping[str, Tensor], m: str, real: Tensor) -> Tensor:
        """Modality ``m`` of the real utterances [N, d], standardised: a new tensor, gathered
        from the batch (``data.tensors.real_features``) and standardised in place."""
        x = real_features(features, m, real)
        mean, std = getattr(self, f"mean_{m}"), getattr(self, f"std_{m}")
        if x.requires_grad:  # someone differentiates with respect to the inputs
            return (x - mean) / std
        return x.sub_(mean).div_(std)

    def aux_losses(self, labels: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """The auxiliary losses of the last training forward call, by name (unweighted)."""
        return {}


class DialogueModel(Backbone):
    """Utterance-level emotion classifier over a dialogue; returns logits [B, L, C] (0 at
    padding)."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        h = spec.hidden
        self.project = nn.ModuleDict(
            {
                # In place: its input is the standardised copy ``standardised`` makes.
                m: nn.Sequential(
                    Dropout(spec.dropout, inplace=True), nn.Linear(spec.input_dims[m], h), nn.ReLU()
                )
                for m in self.modalities
            }
        )
        self.fuse = nn.Sequential(nn.Linear(h * len(self.modalities), h), nn.ReLU())
        self.speaker = nn.Embedding(spec.num_speakers, h)
        self.dropout = Dropout(spec.dropout)
        if spec.encoder == "gru":
            self.context = nn.GRU(
                h, h // 2, num_layers=spec.layers, batch_first=True, bidirectional=True
            )
            ctx_dim = 2 * (h // 2)
        elif spec.encoder == "transformer":
            layer = nn.TransformerEncoderLayer(
                h, spec.heads, dim_feedforward=2 * h, dropout=spec.dropout, batch_first=True
            )
            self.context = nn.TransformerEncoder(
                layer, num_layers=spec.layers, enable_nested_tensor=False
            )
            ctx_dim = h
        else:  # validated by the config; kept for direct use of the library
            raise ValueError(f"unknown encoder {spec.encoder!r}")
        self.classify = nn.Sequential(
            nn.Linear(h + ctx_dim, h),
            nn.ReLU(),
            Dropout(spec.dropout),
            nn.Linear(h, spec.num_classes),
        )

    def forward(
        self, features: dict[str, Tensor], speakers: Tensor, mask: Tensor, lengths: Tensor
    ) -> Tensor:
        return self._forward([self], features, speakers, mask, lengths)[0]

    def forward_matched(
        self,
        frozen: DialogueModel,
        features: dict[str, Tensor],
        speakers: Tensor,
        mask: Tensor,
        lengths: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """This model's logits and those of ``frozen`` (a copy of it with the same input
        statistics, which trains no more), both under the dropout masks this model draws.

        The refactoring losses' matched-dropout target in one pass: the same logits, and the
        same random state afterwards, as running ``frozen`` under a forked random state and
        then this model, but the inputs are standardised and dropped out once for both. On
        the CPU, with the GRU encoder (the Transformer draws dropout masks of its own)."""
        if self.spec.encoder != "gru" or mask.device.type != "cpu":
            raise ValueError("forward_matched needs the GRU encoder on the CPU")
        for m in self.modalities:
            for stat in ("mean", "std"):
                if not torch.equal(getattr(self, f"{stat}_{m}"), getattr(frozen, f"{stat}_{m}")):
                    raise ValueError("forward_matched needs the same input statistics")
        logits = self._forward([self, frozen], features, speakers, mask, lengths)
        return logits[0], logits[1].detach()

    def _forward(
        self,
        nets: list[DialogueModel],
        features: dict[str, Tensor],
        speakers: Tensor,
        mask: Tensor,
        lengths: Tensor,
    ) -> list[Tensor]:
        """The logits of each of ``nets`` (this model first; the others of its architecture),
        every dropout mask drawn once, by this model, and applied to each."""
        batch, length = mask.shape
        where = UtteranceLayout.of(lengths, length, mask.device)
        parts: list[list[Tensor]] = [[] for _ in nets]
        for m in self.modalities:
            # Standardised and dropped out once: the same input for every net.
            x = self.project[m][0](self.standardised(features, m, where.real))
            for net, p in zip(nets, parts):
                p.append(net.project[m][2](net.project[m][1](x)))
        spk = gather(speakers, where.real)
        fused = [net.fuse(torch.cat(p, dim=-1)) + net.speaker(spk) for net, p in zip(nets, parts)]
        fused = self.dropout.same_mask(fused)  # [N, H] each, the N real utterances
        hidden = [
            net.classify[1](
                net.classify[0](torch.cat([f, net._context(f, where, mask, lengths)], -1))
            )
            for net, f in zip(nets, fused)
        ]
        hidden = self.classify[2].same_mask(hidden)
        return [
            scatter(net.classify[3](h), where.real, batch, length) for net, h in zip(nets, hidden)
        ]

    def _context(
        self, fused: Tensor, where: UtteranceLayout, mask: Tensor, lengths: Tensor
    ) -> Tensor:
        """The context encoder over the real utterances [N, H]."""
        batch, length = mask.shape
        if self.spec.encoder == "gru" and self.spec.layers == 1 and fused.device.type == "cpu":
            return self._bigru(fused, lengths)
        if self.spec.encoder == "gru":
            return self._packed_gru(fused, where, batch, length)
        padded = scatter(fused, where.real, batch, length)
        ctx = self.context(padded + positions(padded), src_key_padding_mask=~mask)
        return gather(ctx, where.real)

    def _packed_gru(self, fused: Tensor, where: UtteranceLayout, batch: int, length: int) -> Tensor:
        """``self.context`` over the real utterances [N, H] -> [N, H], by ``nn.GRU`` on a
        packed sequence (cuDNN's fused kernels on a GPU; any number of layers)."""
        # Packed with the dialogues laid out longest first, as packing wants them: the GRU
        # never sees padding, and no permutation is left to do on the device.
        padded = scatter(fused, where.longest_first, batch, length)
        packed = pack_padded_sequence(padded, where.sorted_lengths, batch_first=True)
        out, _ = self.context(packed)
        ctx, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
        return gather(ctx, where.longest_first)

    def _bigru(self, fused: Tensor, lengths: Tensor) -> Tensor:
        """What ``_packed_gru`` computes (one layer), as one recurrence for both directions
        (``models.gru``): on the CPU about twice as fast per training epoch, as the
        backward of ``nn.GRU`` on a packed sequence is quadratic in the dialogue length."""
        gru = self.context
        w_ih = torch.cat([gru.weight_ih_l0, gru.weight_ih_l0_reverse])  # [2 * 3hh, H]
        b_ih = torch.cat([gru.bias_ih_l0, gru.bias_ih_l0_reverse])
        gi = torch.addmm(b_ih, fused, w_ih.t()).view(len(fused), 2, -1)
        w_hh = torch.stack([gru.weight_hh_l0, gru.weight_hh_l0_reverse])
        b_hh = torch.stack([gru.bias_hh_l0, gru.bias_hh_l0_reverse])
        return bidirectional_gru(gi, StepLayout.of(lengths[None], fused.device), w_hh, b_hh)


@dataclass
class UtteranceLayout:
    """Where the N real utterances of a padded batch [B, L] are, in dialogue order.

    ``real`` holds their flat indices into [B * L]; ``longest_first`` their flat indices in
    the same batch with its dialogues sorted longest first (stable), whose lengths are
    ``sorted_lengths``. Both are computed from the lengths on the CPU and reach the device in
    one non-blocking copy, so the device is never asked for a size or an order.
    """

    real: Tensor  # [N] long, on the device
    longest_first: Tensor  # [N] long, on the device
    sorted_lengths: Tensor  # [B] long, on the CPU

    @classmethod
    def of(cls, lengths: Tensor, length: int, device: torch.device) -> UtteranceLayout:
        lengths = lengths.cpu()
        rows, steps = torch.nonzero(torch.arange(length) < lengths[:, None], as_tuple=True)
        order = torch.argsort(lengths, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        both = to_device(torch.stack([rows * length + steps, rank[rows] * length + steps]), device)
        return cls(both[0], both[1], lengths[order])


def gather(x: Tensor, real: Tensor) -> Tensor:
    """The real utterances of a padded [B, L, ...] tensor, as [N, ...]."""
    return x.flatten(0, 1).index_select(0, real)


def scatter(x: Tensor, real: Tensor, batch: int, length: int) -> Tensor:
    """Per-utterance rows [N, ...] back into a padded [B, L, ...] tensor (zeros at padding)."""
    out = x.new_zeros(batch * length, *x.shape[1:]).index_copy(0, real, x)
    return out.view(batch, length, *x.shape[1:])


def positions(x: Tensor) -> Tensor:
    """Sinusoidal position encodings [1, L, H] for the Transformer context encoder."""
    length, dim = x.shape[1], x.shape[2]
    pos = torch.arange(length, device=x.device, dtype=x.dtype)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, device=x.device, dtype=x.dtype) * (-math.log(10000.0) / dim)
    )
    enc = torch.zeros(length, dim, device=x.device, dtype=x.dtype)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return enc[None]


def run_model(model: Backbone, batch) -> Tensor:
    """Logits of ``model`` on a ``Batch`` (features restricted to the model's modalities)."""
    return model(batch.features, batch.speakers, batch.mask, batch.lengths)

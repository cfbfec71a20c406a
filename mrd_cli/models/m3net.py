"""M3Net (Chen et al., CVPR 2023): a multimodal hypergraph and high/low-frequency graph
filtering over the utterances of a dialogue.

Per utterance and modality one node. Each modality has its context encoder: text is
batch-normalised, mapped to ``hidden`` (``text_linear``) and read by a two-layer
bidirectional GRU over the dialogue, then a speaker embedding is added; audio and visual are
mapped linearly to ``hidden``. A shared linear map takes every node to ``graph_hidden``.
Two branches then run on the nodes of each dialogue (``docs/backbones.md`` has the
equations):

- ``num_L`` hypergraph convolutions (``hypergraph_conv``). The hyperedges of a dialogue are
  one per modality (all of its utterances) and one per utterance (its modalities). The
  weights of the hyperedges and of the nodes are two learned tables indexed by a node's or
  hyperedge's *position in the batch*, as in the published code (``position_weights``).
- ``num_K`` gated graph convolutions (``frequency_conv``), ``g <- g + conv(g)``, on a graph
  that joins every two utterances of one modality and the modalities of one utterance; the
  gate ``tanh(w^T [x_i; x_j] + b)`` is signed, so an edge can low-pass (average) or
  high-pass (difference) its neighbours.

Each utterance's classifier reads the concatenation, over its modalities, of both branches'
outputs (dropout, ReLU, linear). With the text modality alone (M_text) the graph has one node
per utterance. Everything runs on padded [B, M, L, F] blocks with masks, so padding never
reaches a real utterance; where mrd departs from the published code is listed in
``DEPARTURES`` (also written into each run's JSON).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mrd_cli.data.tensors import to_device
from mrd_cli.models.dialogue import Backbone, Dropout, ModelSpec, UtteranceLayout, gather, scatter
from mrd_cli.models.gru import StepLayout, bidirectional_gru

# The node order within an utterance (the published code's l, a, v).
MODALITY_ORDER = ("text", "audio", "visual")
# Sizes of the published learned weight tables (hyperedges, nodes) indexed by batch position.
EDGE_TABLE = 1000
NODE_TABLE = 5200
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default, as in the published hypergraph layer

# Where mrd's M3Net differs from github feiyuchen7/M3NET (its published command lines).
DEPARTURES = (
    "text input: mrd's one text vector per utterance (dataset.text_features), standardised "
    "with training statistics, then one BatchNorm1d; the published code batch-normalises each "
    "of the four RoBERTa layers and averages them",
    "audio and visual inputs are standardised with training statistics (the published code "
    "feeds them raw)",
    "batch normalisation and the GRU see real utterances only (the published code "
    "normalises over padding too and runs the GRU over the padded batch, so a shorter "
    "dialogue's backward direction starts in padding)",
    "the position-indexed hyperedge and node weights are counted within groups of "
    "position_group dialogues (16, the published batch size), so larger evaluation batches "
    "see the positions training saw; positions past the published tables (1000 hyperedges, "
    "5200 nodes) weigh 1 instead of failing",
    "with the text modality alone (M_text) the graph has one node per utterance: one "
    "hyperedge for the text of the dialogue and a single-node hyperedge per utterance (the "
    "published graph code handles exactly three modalities)",
    "parameters the published forward pass never uses (the hypergraph layer's weight, "
    "edge weight and edge map, the hyperedge attributes, modality embeddings) are left out",
    "trained by mrd's pretraining loop (its loss, L2 penalty, epoch chosen on validation "
    "W-F1); the published script uses class-weighted NLL on IEMOCAP, its focal loss on MELD, "
    "Adam weight decay 3e-5, and keeps the epoch with the best test score",
)


class M3Net(Backbone):
    """M3Net for the modalities of ``spec``; returns logits [B, L, C] (0 at padding).

    ``spec.options``: ``hidden`` (the published D_g: 512 IEMOCAP, 1024 MELD),
    ``graph_hidden`` (512), ``num_L``, ``num_K``, ``dropout``, ``text_linear`` (false: no
    map before the text GRU, as the published MELD run; needs text width == hidden),
    ``position_weights`` (false: every hyperedge and node weighs 1, and a dialogue's
    prediction no longer depends on its batch), ``position_group``.
    """

    departures = DEPARTURES

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        o = {**M3NET_DEFAULTS, **spec.options}
        self.options = o
        d, g = int(o["hidden"]), int(o["graph_hidden"])
        if "text" not in self.modalities or d % 2:
            raise ValueError("M3Net needs the text modality and an even hidden width")
        self.order = [m for m in MODALITY_ORDER if m in self.modalities]
        dims = spec.input_dims
        self.text_norm = nn.BatchNorm1d(dims["text"])
        if o["text_linear"]:
            self.text_map: nn.Module = nn.Linear(dims["text"], d)
        elif dims["text"] == d:
            self.text_map = nn.Identity()
        else:
            raise ValueError(
                f"m3net text_linear false needs text features of width hidden ({d}), "
                f"got {dims['text']}"
            )
        self.text_gru = nn.GRU(d, d // 2, num_layers=2, bidirectional=True, dropout=o["dropout"])
        self.gru_dropout = Dropout(o["dropout"])
        self.maps = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in self.order if m != "text"})
        self.speaker = nn.Embedding(spec.num_speakers, d)
        self.node_map = nn.Linear(d, g)
        self.edge_weight = nn.Parameter(torch.ones(EDGE_TABLE))
        self.node_weight = nn.Parameter(torch.ones(NODE_TABLE))
        self.hyper_bias = nn.ParameterList(
            [nn.Parameter(torch.zeros(g)) for _ in range(int(o["num_L"]))]
        )
        self.gates = nn.ModuleList([nn.Linear(2 * g, 1) for _ in range(int(o["num_K"]))])
        self.dropout = Dropout(o["dropout"])
        self.classify = nn.Linear(2 * g * len(self.order), spec.num_classes)

    def forward(
        self, features: dict[str, Tensor], speakers: Tensor, mask: Tensor, lengths: Tensor
    ) -> Tensor:
        batch, length = mask.shape
        where = UtteranceLayout.of(lengths, length, mask.device)
        nodes = []
        for m in self.order:
            x = self.standardised(features, m, where.real)  # [N, d_m]
            if m == "text":
                x = self._context(self.text_map(self.text_norm(x)), where, lengths, batch, length)
                x = x + self.speaker(gather(speakers, where.real))
            else:
                x = self.maps[m](x)
            nodes.append(scatter(x, where.real, batch, length))
        x1 = self.node_map(torch.stack(nodes, dim=1))  # [B, M, L, G]
        graph = DialogueGraph.of(lengths, length, len(self.order), self.options, mask.device)
        hyper = x1
        for bias in self.hyper_bias:
            hyper = hypergraph_conv(hyper, graph, self._weights(graph), bias)
        freq = x1
        for gate in self.gates:
            freq = freq + frequency_conv(freq, graph, gate)
        out = torch.cat([hyper, freq], dim=-1).transpose(1, 2).flatten(2)  # [B, L, M * 2G]
        h = F.relu(self.dropout(gather(out, where.real)))
        return scatter(self.classify(h), where.real, batch, length)

    def _weights(self, graph: DialogueGraph) -> tuple[Tensor, Tensor]:
        """The hyperedge and node weights of ``graph``'s positions (1 past the tables)."""
        one = self.edge_weight.new_ones(1)
        if not self.options["position_weights"]:
            return one, one
        return torch.cat([self.edge_weight, one]), torch.cat([self.node_weight, one])

    def _context(
        self, x: Tensor, where: UtteranceLayout, lengths: Tensor, batch: int, length: int
    ) -> Tensor:
        """The two-layer bidirectional text GRU over each dialogue's real utterances [N, D]."""
        gru = self.text_gru
        if x.device.type != "cpu":
            return self._packed_context(x, where, batch, length)
        lay = StepLayout.of(lengths[None], x.device)
        for layer in range(gru.num_layers):
            if layer:
                x = self.gru_dropout(x)  # nn.GRU's dropout between layers
            w = [
                getattr(gru, f"{name}_l{layer}{side}")
                for name in ("weight_ih", "bias_ih", "weight_hh", "bias_hh")
                for side in ("", "_reverse")
            ]
            gi = torch.addmm(torch.cat(w[2:4]), x, torch.cat(w[0:2]).t()).view(len(x), 2, -1)
            x = bidirectional_gru(gi, lay, torch.stack(w[4:6]), torch.stack(w[6:8]))
        return x

    def _packed_context(self, x: Tensor, where: UtteranceLayout, batch: int, length: int) -> Tensor:
        """``_context`` off the CPU: ``nn.GRU`` on a packed sequence (cuDNN on a GPU)."""
        padded = scatter(x, where.longest_first, batch, length)
        packed = pack_padded_sequence(padded, where.sorted_lengths, batch_first=True)
        out, _ = self.text_gru(packed)
        ctx, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
        return gather(ctx, where.longest_first)


M3NET_DEFAULTS = {
    "hidden": 512,
    "graph_hidden": 512,
    "num_L": 3,
    "num_K": 4,
    "dropout": 0.5,
    "text_linear": True,
    "position_weights": True,
    "position_group": 16,
}


class DialogueGraph:
    """The hypergraph and the graph of a batch, as index and mask tensors over the padded
    node block [B, M, L] (dialogue b, modality m, utterance t).

    ``mask`` [B, 1, L, 1] marks real utterances. ``node_pos`` [B, M, L], ``mod_edge_pos``
    [B, M] and ``utt_edge_pos`` [B, L] are the published code's batch positions of each
    node, modality hyperedge and utterance hyperedge (dialogue after dialogue; within one,
    nodes modality by modality, hyperedges the modalities' first), counted within groups of
    ``position_group`` dialogues, and capped at the table sizes (the cap reads weight 1).
    ``inv_sqrt_deg`` [B, L] is 1 / sqrt(degree) of a node in the graph, whose degree is
    (n - 1) + (M - 1) for every node of a dialogue of n utterances (0 where it has none).
    """

    def __init__(self, **tensors: Tensor):
        self.__dict__.update(tensors)

    @classmethod
    def of(
        cls, lengths: Tensor, length: int, modalities: int, options: dict, device: torch.device
    ) -> DialogueGraph:
        lengths = lengths.cpu().long()
        batch = len(lengths)
        real = torch.arange(length) < lengths[:, None]  # [B, L]
        if options["position_weights"]:
            group = int(options["position_group"])
            starts = torch.arange(batch) // group * group
            node_n = modalities * lengths
            edge_n = modalities + lengths
            node_off = _offsets_in_group(node_n, starts)
            edge_off = _offsets_in_group(edge_n, starts)
            m = torch.arange(modalities)
            t = torch.arange(length)
            node_pos = node_off[:, None, None] + m[None, :, None] * lengths[:, None, None] + t
            mod_pos = edge_off[:, None] + m
            utt_pos = edge_off[:, None] + modalities + t
            node_pos, mod_pos, utt_pos = (
                p.clamp(max=cap)
                for p, cap in ((node_pos, NODE_TABLE), (mod_pos, EDGE_TABLE), (utt_pos, EDGE_TABLE))
            )
        else:  # every weight reads index 0 of a one-entry table of ones
            node_pos = torch.zeros(batch, modalities, length, dtype=torch.long)
            mod_pos = torch.zeros(batch, modalities, dtype=torch.long)
            utt_pos = torch.zeros(batch, length, dtype=torch.long)
        deg = (lengths - 1 + modalities - 1).clamp(min=0).double()
        inv = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), 0.0)
        inv_sqrt_deg = (inv[:, None] * real).float()
        moved = [to_device(x, device) for x in (real, node_pos, mod_pos, utt_pos, inv_sqrt_deg)]
        return cls(
            mask=moved[0][:, None, :, None],
            node_pos=moved[1],
            mod_edge_pos=moved[2],
            utt_edge_pos=moved[3],
            inv_sqrt_deg=moved[4],
        )


def _offsets_in_group(sizes: Tensor, starts: Tensor) -> Tensor:
    """For each dialogue, the summed ``sizes`` of the dialogues before it in its group."""
    before = torch.cumsum(sizes, 0) - sizes
    return before - before[starts]


def hypergraph_conv(
    x: Tensor, graph: DialogueGraph, weights: tuple[Tensor, Tensor], bias: Tensor
) -> Tensor:
    """One hypergraph convolution of M3Net, on the node block ``x`` [B, M, L, G].

    With ``w_e`` the weight of hyperedge e and ``u_v`` that of node v (``weights``: the two
    tables, indexed by ``graph``'s positions), each hyperedge gathers
    ``E_e = (sum_{v in e} x_v) / (sum_{v in e} u_v)`` and each node reads
    ``LeakyReLU((sum_{e ni v} E_e) / (sum_{e ni v} w_e) + bias)``. Every node lies in two
    hyperedges: its modality's (all utterances of the dialogue) and its utterance's (all
    modalities). No weight matrix: the published layer comments it out.
    """
    edge_w, node_w = weights
    mask = graph.mask  # [B, 1, L, 1]
    xm = x * mask
    u = node_w[graph.node_pos] * mask[..., 0]  # [B, M, L]
    mod_sum, utt_sum = u.sum(2), u.sum(1)  # [B, M], [B, L]
    e_mod = xm.sum(2) / _safe(mod_sum)[..., None]  # [B, M, G]
    e_utt = xm.sum(1) / _safe(utt_sum)[..., None]  # [B, L, G]
    node_deg = edge_w[graph.mod_edge_pos][:, :, None] + edge_w[graph.utt_edge_pos][:, None, :]
    out = (e_mod[:, :, None, :] + e_utt[:, None, :, :]) / _safe(node_deg)[..., None] + bias
    return F.leaky_relu(out, LEAKY_SLOPE) * mask


def _safe(s: Tensor) -> Tensor:
    """``s`` with its zeros (padding's empty sums) replaced by 1, so no division makes inf."""
    return torch.where(s == 0, torch.ones_like(s), s)


def frequency_conv(x: Tensor, graph: DialogueGraph, gate: nn.Linear) -> Tensor:
    """M3Net's gated graph convolution on the node block ``x`` [B, M, L, G]:
    ``out_i = sum_{j ~ i} tanh(w_1^T x_i + w_2^T x_j + b) x_j / sqrt(d_i d_j)``.

    Neighbours: every other utterance of the same modality and dialogue, and the other
    modalities of the same utterance. The signed gate lets an edge act as a low-pass (> 0)
    or a high-pass (< 0) filter.
    """
    g = x.shape[-1]
    w = gate.weight[0]
    a = x @ w[:g] + gate.bias  # [B, M, L]: the receiving node's part
    c = x @ w[g:]  # the sending node's part
    mask = graph.mask[..., 0]  # [B, 1, L]
    s = graph.inv_sqrt_deg  # [B, L]
    length = x.shape[2]
    # Within a modality: utterance i <- utterance j of the same dialogue, i != j.
    pair = (mask[..., :, None] & mask[..., None, :]) & ~torch.eye(
        length, dtype=torch.bool, device=x.device
    )
    scale = s[:, None, :, None] * s[:, None, None, :]
    within = torch.tanh(a[..., :, None] + c[..., None, :]) * scale * pair  # [B, M, L, L]
    out = within @ x
    modalities = x.shape[1]
    if modalities > 1:  # Within an utterance: modality m <- modality n != m.
        a_t, c_t = a.transpose(1, 2), c.transpose(1, 2)  # [B, L, M]
        other = ~torch.eye(modalities, dtype=torch.bool, device=x.device)
        cross = torch.tanh(a_t[..., :, None] + c_t[..., None, :]) * other  # [B, L, M, M]
        cross = cross * (s * s * mask[:, 0])[..., None, None]
        out = out + (cross @ x.transpose(1, 2)).transpose(1, 2)
    return out

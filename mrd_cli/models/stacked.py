"""K independent ``DialogueModel``s (same spec, GRU encoder) run as one computation.

The cross-fitted partition trains K fold models of a role that share their architecture but
nothing else: their weights, their training dialogues, their shuffles and their dropout
masks all differ. A training step of one model is thousands of small operations (the GRU
steps), so its cost is per-operation overhead; here every operation works on all K models
at once, its leading dimension being the model, and the overhead is paid once.

``StackedModels`` holds the K models' parameters stacked along a new first dimension
(``stack``/``unstack`` convert from and to ``DialogueModel`` state dicts, so a trained
member is an ordinary ``DialogueModel``). ``forward`` takes one batch per model (or None:
that model sits the step out) and computes exactly what ``DialogueModel.forward`` computes
for each, up to floating-point rounding: the linear layers become batched matrix products,
the bidirectional GRU a hand-written recurrence over both directions of all K models
(same equations and gate layout as ``nn.GRU``; each dialogue runs over its own length only,
the backward direction over its reversed real utterances, as packing does), and dropout
draws each model's mask from that model's own generator, in the draw format of
``models.dialogue.Dropout`` and in the order ``DialogueModel.forward`` draws them. Seeded
like torch's global generator in ``recipes.pretrain.train_role``, the masks are the same
ones the model gets when trained alone on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from mrd_cli.data.tensors import Batch, real_features, to_device
from mrd_cli.models.dialogue import DialogueModel, ModelSpec, keep_level, keep_mask
from mrd_cli.models.gru import StepLayout, bidirectional_gru

# DialogueModel parameter names (GRU encoder, one layer) -> short names used here.
GRU_DIRS = ("", "_reverse")


def supports(spec: ModelSpec | Any) -> bool:
    """Can models of ``spec`` (or of a model config) be stacked (one-layer GRU encoder)?"""
    return spec.encoder == "gru" and spec.layers == 1


@dataclass
class StackedLayout:
    """Where each model's real utterances are, for one stacked step.

    ``counts[k]`` real utterances of model k (0 when it sits out); per-utterance tensors are
    [K, N, ...] with N = max count. ``real`` [T] indexes the real rows of [K * N] (model by
    model, in dialogue order); ``gru`` places the same T utterances in the bidirectional
    GRU's time-major input (``models.gru.StepLayout``).
    """

    counts: list[int]
    n: int
    real: Tensor
    gru: StepLayout

    @classmethod
    def of(cls, batches: list[Batch | None], device: torch.device) -> StackedLayout:
        lens = [
            b.lengths.cpu() if b is not None else torch.zeros(0, dtype=torch.long) for b in batches
        ]
        counts = [int(x.sum()) for x in lens]
        n = max(max(counts), 1)
        lengths = torch.zeros(len(batches), max(max(len(x) for x in lens), 1), dtype=torch.long)
        for k, x in enumerate(lens):
            lengths[k, : len(x)] = x
        real = torch.cat([k * n + torch.arange(c) for k, c in enumerate(counts)])
        return cls(counts, n, to_device(real, device), StepLayout.of(lengths, device))


def _stack_real(
    parts: list[Tensor | None],
    n: int,
    fill_dim: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """Per-model [N_k, ...] rows into a [K, N, ...] tensor (zeros beyond N_k)."""
    out = torch.zeros(len(parts), n, *fill_dim, dtype=dtype, device=device)
    for k, p in enumerate(parts):
        if p is not None and len(p):
            out[k, : len(p)] = p
    return out


class StackedModels:
    """The stacked parameters of K models of one spec, and their batched forward pass."""

    def __init__(self, models: list[DialogueModel]):
        spec = models[0].spec
        if not supports(spec):
            raise ValueError("only one-layer GRU models can be stacked")
        self.spec = spec
        self.k = len(models)
        self.modalities = list(spec.modalities)
        self.keep = keep_level(spec.dropout)
        states = [m.state_dict() for m in models]
        self.names = list(states[0])
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        trainable = {n for n, _ in models[0].named_parameters()}
        for name in self.names:
            stacked = torch.stack([s[name].detach() for s in states]).clone()
            if name in trainable:
                self.params[name] = stacked.requires_grad_(True)
            else:
                self.buffers[name] = stacked
        self.device = next(iter(self.params.values())).device

    def unstack(self, k: int) -> dict[str, Tensor]:
        """Model k's state dict (copies), loadable into a ``DialogueModel``."""
        out = {}
        for name in self.names:
            src = self.params.get(name, self.buffers.get(name))
            out[name] = src[k].detach().clone()
        return out

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    # ---------------------------------------------------------------------------------
    def _keep_mask(self, gen: torch.Generator, n: int, d: int, device: torch.device) -> Tensor:
        """The [n, d] keep mask ``Dropout.forward`` draws on the CPU, from ``gen``."""
        return to_device(keep_mask((n, d), self.keep, gen), device)

    def _dropping(self, gens: list[torch.Generator | None] | None) -> bool:
        return gens is not None and self.keep not in (0, 65536)

    def _dropout(
        self, x: Tensor, counts: list[int], gens: list[torch.Generator | None] | None
    ) -> Tensor:
        """``Dropout`` on [K, N, D] rows, model k's mask drawn from ``gens[k]`` for its
        ``counts[k]`` real rows, exactly as ``Dropout.forward`` draws it on the CPU."""
        if not self._dropping(gens):
            return x
        masks = [
            self._keep_mask(gens[k], n, x.shape[-1], torch.device("cpu"))
            if n and gens[k] is not None
            else None
            for k, n in enumerate(counts)
        ]
        kept = _stack_real(masks, x.shape[1], (x.shape[-1],), torch.bool, torch.device("cpu"))
        return x * to_device(kept, x.device) * (65536 / self.keep)

    def _projected(
        self,
        m: str,
        batches: list[Batch | None],
        reals: list[Tensor | None],
        gens: list[torch.Generator | None] | None,
    ) -> Tensor:
        """Each model's projection of modality ``m`` at its real utterances, [K, N, H].

        Model by model on its own rows, as ``DialogueModel.forward`` does: the inputs are
        wide (audio 1582, RoBERTa 1024), and standardising, dropping out and projecting only
        the real rows of each model costs a fraction of doing it on a padded [K, N, D].
        ``reals[k]``: the flat indices of batch k's real utterances in its [B * L]."""
        p = self.params
        weights = p[f"project.{m}.1.weight"].unbind(0)
        biases = p[f"project.{m}.1.bias"].unbind(0)
        mean, std = self.buffers[f"mean_{m}"], self.buffers[f"std_{m}"]
        rows = []
        for k, b in enumerate(batches):
            if b is None:
                rows.append(weights[k].new_zeros(0, weights[k].shape[0]))
                continue
            # In place on the gathered copy, as ``DialogueModel`` does.
            x = real_features(b.features, m, reals[k]).sub_(mean[k]).div_(std[k])
            if self._dropping(gens) and gens[k] is not None:
                x.mul_(self._keep_mask(gens[k], *x.shape, x.device)).mul_(65536 / self.keep)
            rows.append(torch.relu(torch.addmm(biases[k], x, weights[k].t())))
        return pad_sequence(rows, batch_first=True)

    def forward(
        self,
        batches: list[Batch | None],
        generators: list[torch.Generator | None] | None = None,
    ) -> tuple[Tensor, StackedLayout]:
        """Logits [K, N, C] of each model's real utterances (in dialogue order, as
        ``Batch.mask`` lists them) and the layout. ``generators`` (training) draw the
        dropout masks; None is evaluation (no dropout)."""
        p = self.params
        lay = StackedLayout.of(batches, self.device)
        dev = self.device
        counts = lay.counts
        reals = [
            torch.nonzero(b.mask.flatten()).flatten() if b is not None else None for b in batches
        ]
        parts = [self._projected(m, batches, reals, generators) for m in self.modalities]
        cat = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        fused = torch.relu(
            torch.baddbmm(p["fuse.0.bias"][:, None], cat, p["fuse.0.weight"].transpose(1, 2))
        )
        spk = _stack_real(
            [b.speakers[b.mask] if b is not None else None for b in batches],
            lay.n,
            (),
            torch.long,
            dev,
        )
        emb = p["speaker.weight"]
        fused = fused + torch.gather(emb, 1, spk[..., None].expand(-1, -1, emb.shape[-1]))
        fused = self._dropout(fused, counts, generators)
        ctx = self._gru(fused, lay)
        h = torch.cat([fused, ctx], dim=-1)
        h = torch.relu(
            torch.baddbmm(p["classify.0.bias"][:, None], h, p["classify.0.weight"].transpose(1, 2))
        )
        h = self._dropout(h, counts, generators)
        logits = torch.baddbmm(
            p["classify.3.bias"][:, None], h, p["classify.3.weight"].transpose(1, 2)
        )
        return logits, lay

    def _gru(self, fused: Tensor, lay: StackedLayout) -> Tensor:
        """The bidirectional one-layer GRU over each model's dialogues: [K, N, 2 * hh]."""
        p = self.params
        k = self.k
        # Input gates of both directions in one product per model: [K, N, 2 * 3hh].
        w_ih = torch.cat([p[f"context.weight_ih_l0{d}"] for d in GRU_DIRS], dim=1)
        b_ih = torch.cat([p[f"context.bias_ih_l0{d}"] for d in GRU_DIRS], dim=1)
        gi = torch.baddbmm(b_ih[:, None], fused, w_ih.transpose(1, 2))
        gi = gi.reshape(k * lay.n, 2, -1).index_select(0, lay.real)
        w_hh = torch.cat([p[f"context.weight_hh_l0{d}"] for d in GRU_DIRS])  # [2K, 3hh, hh]
        b_hh = torch.cat([p[f"context.bias_hh_l0{d}"] for d in GRU_DIRS])
        ctx = bidirectional_gru(gi, lay.gru, w_hh, b_hh)
        out = fused.new_zeros(k * lay.n, ctx.shape[-1]).index_copy(0, lay.real, ctx)
        return out.view(k, lay.n, -1)


def real_rows(batches: list[Batch | None], lay: StackedLayout) -> tuple[Tensor, Tensor]:
    """Each model's labels of its real utterances [K, N] and which rows are real [K, N]."""
    dev = lay.real.device
    labels = _stack_real(
        [b.labels[b.mask] if b is not None else None for b in batches],
        lay.n,
        (),
        torch.long,
        dev,
    )
    counts = torch.as_tensor(lay.counts)
    active = to_device(torch.arange(lay.n)[None] < counts[:, None], dev)
    return labels, active


class MaskedAdam:
    """``torch.optim.Adam`` (default betas and eps, no weight decay) over stacked parameters
    with a step count per model: a model that sits a step out (``active[k]`` False) keeps its
    weights, moments and step count, as if that step had not happened to it."""

    def __init__(self, params: list[Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        k = params[0].shape[0]
        self.steps = torch.zeros(k, dtype=torch.float64)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: list[bool]) -> None:
        act = torch.as_tensor(active)
        self.steps += act.to(torch.float64)
        t = self.steps.clamp_min(1)
        bc1 = 1 - self.b1**t
        bc2_sqrt = (1 - self.b2**t).sqrt()
        step_size = (self.lr / bc1).to(torch.float32)
        dev = self.params[0].device
        act_d = to_device(act, dev)
        bc2_d = to_device(bc2_sqrt.to(torch.float32), dev)
        step_d = to_device(step_size, dev)
        everyone = bool(act.all())
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            a = act_d.view(shape)
            g = p.grad
            if everyone:  # the usual step: torch.optim.Adam's update, in place
                m.lerp_(g, 1 - self.b1)
                v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                denom = v.sqrt().div_(bc2_d.view(shape)).add_(self.eps)
                p.sub_((m / denom).mul_(step_d.view(shape)))
                continue
            m.copy_(torch.where(a, torch.lerp(m, g, 1 - self.b1), m))
            v.copy_(torch.where(a, torch.addcmul(v * self.b2, g, g, value=1 - self.b2), v))
            denom = v.sqrt() / bc2_d.view(shape) + self.eps
            upd = (m / denom) * step_d.view(shape)
            p.sub_(torch.where(a, upd, torch.zeros_like(upd)))

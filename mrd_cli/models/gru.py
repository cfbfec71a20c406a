"""The GRU recurrence of the context encoder as one autograd operation, for the CPU.

``torch.nn.GRU`` on the CPU runs a packed sequence as one small autograd graph per step, and
the backward of its per-step slices of the packed data writes a zero tensor the size of the
whole batch for every step: at IEMOCAP's dialogue lengths (up to 110 utterances) that
backward was a third of a training epoch. ``gru_recurrence`` runs the same equations (gate
layout and bias placement of ``nn.GRU``) as one ``autograd.Function``: the forward loop
records nothing for autograd, the backward loop is back-propagation through time written
out, and the gradient of the recurrent weights is one batched matrix product over all steps
instead of one per step.

Every sequence starts at step 0 and its padding, if any, comes after its last real step
(a backward direction is fed its real steps reversed, see ``bidirectional_gru``); outputs at
padded steps are left as computed and must not be used, and no gradient may reach them
(callers gather the real steps). Then no masking is needed: a padded step never feeds a
real one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from mrd_cli.data.tensors import to_device


class _GRURecurrence(torch.autograd.Function):
    """h_t = GRU(gi_t, h_{t-1}), h_{-1} = 0, for D independent recurrences at once.

    ``gi`` [T, D, B, 3H] input gates (x W_ih^T + b_ih, gate order r, z, n), time first so
    that a step is contiguous; ``w_hh`` [D, 3H, H], ``b_hh`` [D, 3H]; returns the hidden
    states [T, D, B, H]. The loops are ``_steps_forward`` and ``_steps_backward``.
    """

    @staticmethod
    def forward(ctx, gi: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        w_hh = w_hh.detach()
        hs, rz, n, gh_n = _steps_forward(gi.detach(), w_hh, b_hh.detach())
        ctx.save_for_backward(w_hh, hs, rz, n, gh_n)
        return hs[1:]

    @staticmethod
    @once_differentiable  # a second derivative through this backward would be wrong: refuse it
    def backward(ctx, grad_out: Tensor):
        w_hh, hs, rz, n, gh_n = ctx.saved_tensors
        dgh, da_n, grad_w, grad_b = _steps_backward(grad_out.detach(), w_hh, hs, rz, n, gh_n)
        hid = hs.shape[-1]
        return torch.cat([dgh[..., : 2 * hid], da_n], dim=-1), grad_w, grad_b


class _BidirectionalGRU(torch.autograd.Function):
    """``_GRURecurrence`` on the time-major layout of ``StepLayout``, taking and returning
    per-utterance rows: the scatter of the input gates into the padded [T, D, B, 3H] and the
    gather of the outputs (and, backwards, of their gradients) happen inside, so autograd
    never holds a padded tensor nor the zeros it was scattered into."""

    @staticmethod
    def forward(ctx, gi: Tensor, w_hh: Tensor, b_hh: Tensor, lay: StepLayout) -> Tensor:
        gi, w_hh = gi.detach(), w_hh.detach()
        three_h = gi.shape[-1]
        x = gi.new_zeros(lay.steps * lay.directions * lay.rows, three_h)
        x.index_copy_(0, lay.fwd, gi[:, 0])
        x.index_copy_(0, lay.rev, gi[:, 1])
        shape = (lay.steps, lay.directions, lay.rows)
        hs, rz, n, gh_n = _steps_forward(x.view(*shape, three_h), w_hh, b_hh.detach())
        ctx.save_for_backward(w_hh, hs, rz, n, gh_n)
        ctx.lay = lay
        out = hs[1:].reshape(-1, three_h // 3)
        return torch.cat([out.index_select(0, lay.fwd), out.index_select(0, lay.rev)], dim=-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        w_hh, hs, rz, n, gh_n = ctx.saved_tensors
        lay = ctx.lay
        hid = hs.shape[-1]
        grad = grad.detach()
        g = grad.new_zeros(lay.steps * lay.directions * lay.rows, hid)
        g.index_copy_(0, lay.fwd, grad[:, :hid])
        g.index_copy_(0, lay.rev, grad[:, hid:])
        g = g.view(lay.steps, lay.directions, lay.rows, hid)
        dgh, da_n, grad_w, grad_b = _steps_backward(g, w_hh, hs, rz, n, gh_n)
        dgh, da_n = dgh.view(-1, 3 * hid), da_n.view(-1, hid)
        grad_gi = torch.stack(
            [
                torch.cat([dgh.index_select(0, idx)[:, : 2 * hid], da_n.index_select(0, idx)], -1)
                for idx in (lay.fwd, lay.rev)
            ],
            dim=1,
        )
        return grad_gi, grad_w, grad_b, None


def _steps_forward(gi: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, ...]:
    """The forward loop on detached tensors (nothing goes through autograd's dispatch).

    Returns the hidden states with h_{-1} = 0 in front, [T + 1, D, B, H] (so that the
    backward reads h_{t-1} as a view), and what the backward needs: the r and z gates
    [T, D, B, 2H], n [T, D, B, H] and the n part of h_{t-1} W_hh^T + b_hh [T, D, B, H]. A
    step is a handful of operations on tensors of D * B * H numbers, so its cost is the
    number of operations: whatever does not depend on the step before is done outside."""
    steps, d, b, three_h = gi.shape
    hid = three_h // 3
    w_t = w_hh.transpose(1, 2).contiguous()  # [D, H, 3H]
    bias = b_hh[:, None]  # [D, 1, 3H]
    hs = gi.new_empty(steps + 1, d, b, hid)
    hs[0] = 0
    h = hs[0]
    outs, rzs, ns, ghns = [], [], [], []
    # Plain operations: on tensors this small an ``out=`` costs more than the allocation.
    for g in gi.unbind(0):
        gh = torch.baddbmm(bias, h, w_t)
        rz = torch.sigmoid(g[..., : 2 * hid] + gh[..., : 2 * hid])
        gh_n = gh[..., 2 * hid :]
        n = torch.tanh(torch.addcmul(g[..., 2 * hid :], rz[..., :hid], gh_n))
        h = torch.addcmul(n, rz[..., hid:], h - n)  # n + z (h - n)
        outs.append(h)
        rzs.append(rz)
        ns.append(n)
        ghns.append(gh_n)
    torch.stack(outs, out=hs[1:])
    return hs, torch.stack(rzs), torch.stack(ns), torch.stack(ghns)


def _steps_backward(
    grad_out: Tensor, w_hh: Tensor, hs: Tensor, rz: Tensor, n: Tensor, gh_n: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Back-propagation through time of ``_steps_forward``, given dL/dh_t [T, D, B, H].

    Returns dL/d(h_{t-1} W_hh^T + b_hh) [T, D, B, 3H] (gate order r, z, n; its r and z parts
    are also dL/dgi_t's), dL/da_n [T, D, B, H] (the n part of dL/dgi_t), and the gradients
    of ``w_hh`` and ``b_hh``."""
    steps, d, b, hid = grad_out.shape
    r, z = rz[..., :hid], rz[..., hid:]
    h_prev = hs[:-1]
    # Everything that does not depend on the gradient flowing back through time, for all
    # steps at once: dL/da of each pre-activation a per unit of dL/dh_t (z, n) or of
    # dL/da_n (r, and gh_n's share), with h_t = n + z (h_{t-1} - n), z = sigmoid(a_z),
    # n = tanh(a_n), a_n = gi_n + r gh_n, r = sigmoid(a_r).
    dn = ((1 - z) * (1 - n * n)).unbind(0)
    dz = ((h_prev - n) * z * (1 - z)).unbind(0)
    dr = (gh_n * r * (1 - r)).unbind(0)
    r_t, z_t, g_t = r.unbind(0), z.unbind(0), grad_out.unbind(0)
    w = w_hh.contiguous()
    dh = grad_out.new_zeros(d, b, hid)
    dgh = grad_out.new_empty(steps, d, b, 3 * hid)
    da_n = grad_out.new_empty(steps, d, b, hid)
    views = zip(
        dgh[..., :hid].unbind(0),
        dgh[..., hid : 2 * hid].unbind(0),
        dgh[..., 2 * hid :].unbind(0),
        da_n.unbind(0),
    )
    dgh_t = dgh.unbind(0)
    for t, (da_r, da_z, dgh_n, dan) in reversed(list(enumerate(views))):
        dh = dh + g_t[t]
        torch.mul(dh, dn[t], out=dan)
        torch.mul(dan, dr[t], out=da_r)
        torch.mul(dh, dz[t], out=da_z)
        torch.mul(dan, r_t[t], out=dgh_n)
        dh = torch.baddbmm(dh * z_t[t], dgh_t[t], w)  # dh_t z + dgh W_hh
    # Recurrent weights: the sum over steps of dgh_t^T h_{t-1}, as one product.
    dgh_all = dgh.transpose(0, 1).reshape(d, steps * b, 3 * hid)
    h_all = h_prev.transpose(0, 1).reshape(d, steps * b, hid)
    return dgh, da_n, torch.bmm(dgh_all.transpose(1, 2), h_all), dgh_all.sum(1)


def gru_recurrence(gi: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """Hidden states [T, D, B, H] of D independent GRU recurrences (see the module doc)."""
    return _GRURecurrence.apply(gi, w_hh, b_hh)


@dataclass
class StepLayout:
    """Where the real utterances of K models' dialogue batches sit in the time-major input of
    ``gru_recurrence`` for a bidirectional GRU: [L, 2K, B], direction-model d = k (forward)
    or K + k (backward), dialogue row b, step t.

    ``fwd`` [N] / ``rev`` [N] are the flat positions of the N real utterances (model by
    model, dialogue by dialogue, in order) for the forward direction and for the backward
    one, which reads each dialogue's real utterances last first, from its own step 0.
    """

    fwd: Tensor
    rev: Tensor
    steps: int
    directions: int
    rows: int

    @classmethod
    def of(cls, lengths: Tensor, device: torch.device) -> StepLayout:
        """From the dialogue lengths [K, B] (0 for a missing dialogue), on the CPU."""
        lengths = lengths.cpu()
        k, b = lengths.shape
        steps = max(int(lengths.max()) if lengths.numel() else 0, 1)
        kk, rows, t = torch.nonzero(torch.arange(steps) < lengths[..., None], as_tuple=True)
        fwd = (t * 2 * k + kk) * b + rows
        rev = ((lengths[kk, rows] - 1 - t) * 2 * k + k + kk) * b + rows
        both = to_device(torch.stack([fwd, rev]), device)
        return cls(both[0], both[1], steps, 2 * k, b)


def bidirectional_gru(gi: Tensor, lay: StepLayout, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """Outputs [N, 2H] (forward, backward) of the bidirectional GRUs of K models at their N
    real utterances. ``gi`` [N, 2, 3H]: each utterance's input gates for the forward and
    the backward direction; ``w_hh`` [2K, 3H, H] and ``b_hh`` [2K, 3H], the K models'
    forward directions first."""
    return _BidirectionalGRU.apply(gi, w_hh, b_hh, lay)

"""The CPU GRU recurrence (``models.gru``) computes what ``nn.GRU`` computes, with the same
gradients: against autograd's numerical gradient, and against ``nn.GRU`` on packed
sequences inside the dialogue network."""

from __future__ import annotations

import torch

from mrd_cli.models.dialogue import DialogueModel, ModelSpec, UtteranceLayout
from mrd_cli.models.gru import StepLayout, bidirectional_gru, gru_recurrence


def test_gru_recurrence_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(0)
    steps, d, b, hid = 6, 3, 4, 5
    gi = torch.randn(steps, d, b, 3 * hid, generator=gen, dtype=torch.float64)
    w_hh = torch.randn(d, 3 * hid, hid, generator=gen, dtype=torch.float64)
    b_hh = torch.randn(d, 3 * hid, generator=gen, dtype=torch.float64)
    inputs = tuple(x.requires_grad_() for x in (gi, w_hh, b_hh))
    assert torch.autograd.gradcheck(gru_recurrence, inputs)


def test_bidirectional_gru_gradients_match_finite_differences():
    """The per-utterance entry point (scatter into the padded time-major layout, recurrence,
    gather back, all inside one autograd operation) for K = 2 models with dialogues of
    different lengths, one of them missing (length 0)."""
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([[3, 1, 4], [2, 0, 4]])
    k, hid = lengths.shape[0], 3
    n = int(lengths.sum())
    gi = torch.randn(n, 2, 3 * hid, generator=gen, dtype=torch.float64)
    w_hh = torch.randn(2 * k, 3 * hid, hid, generator=gen, dtype=torch.float64)
    b_hh = torch.randn(2 * k, 3 * hid, generator=gen, dtype=torch.float64)
    lay = StepLayout.of(lengths, torch.device("cpu"))
    inputs = tuple(x.requires_grad_() for x in (gi, w_hh, b_hh))
    assert torch.autograd.gradcheck(lambda g, w, b: bidirectional_gru(g, lay, w, b), inputs)


def test_gru_recurrence_equals_nn_gru():
    torch.manual_seed(0)
    steps, b, hid = 7, 3, 4
    gru = torch.nn.GRU(hid, hid).double()
    x = torch.randn(steps, b, hid, dtype=torch.float64)
    expected, _ = gru(x)
    gi = (x @ gru.weight_ih_l0.T + gru.bias_ih_l0)[:, None]  # one recurrence: D = 1
    got = gru_recurrence(gi, gru.weight_hh_l0[None], gru.bias_hh_l0[None])[:, 0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_dialogue_network_cpu_gru_equals_packed_nn_gru():
    """Same outputs and gradients (inputs and every GRU weight) for dialogues of lengths 1
    to the batch maximum, so the reversed direction and the padding are both exercised."""
    torch.manual_seed(0)
    spec = ModelSpec(
        modalities=["text"], input_dims={"text": 6}, num_speakers=2, num_classes=3, hidden=8
    )
    model = DialogueModel(spec).double()
    lengths = torch.tensor([3, 7, 1, 5, 7])
    batch, length = len(lengths), int(lengths.max())
    where = UtteranceLayout.of(lengths, length, torch.device("cpu"))
    fused = torch.randn(int(lengths.sum()), 8, dtype=torch.float64)

    def run(method):
        model.zero_grad()
        x = fused.clone().requires_grad_()
        out = method(x)
        # A loss that weighs every output differently, so a misplaced one would show.
        (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.context.named_parameters()}
        return out.detach(), x.grad, grads

    ours = run(lambda x: model._bigru(x, lengths))
    packed = run(lambda x: model._packed_gru(x, where, batch, length))
    torch.testing.assert_close(ours[0], packed[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(ours[1], packed[1], rtol=0, atol=1e-12)
    for name in packed[2]:
        torch.testing.assert_close(ours[2][name], packed[2][name], rtol=0, atol=1e-12)

"""Each MRD loss term against values computed by hand."""

import math

import pytest
import torch

from mrd_cli.core.losses import (
    classification_loss,
    distillation_kl,
    ilc_loss,
    mrd_total_loss,
    mutual_distillation_loss,
    refactoring_loss,
)


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(z, t):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def test_distillation_kl_matches_hand_computation_with_temperature():
    student = torch.tensor([[[1.0, 0.0, -1.0]]])
    teacher = torch.tensor([[[0.0, 2.0, 0.0]]])
    active = torch.ones(1, 1)
    t = 2.0
    expected = _kl(_softmax([0.0, 2.0, 0.0], t), _softmax([1.0, 0.0, -1.0], t))
    got = distillation_kl(student, teacher, active, temperature=t)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    scaled = distillation_kl(student, teacher, active, temperature=t, t2_scaling=True)
    assert scaled.item() == pytest.approx(expected * t * t, rel=1e-5)


def test_distillation_kl_direction_is_teacher_to_student():
    a = torch.tensor([[[3.0, 0.0, 0.0]]])
    b = torch.tensor([[[0.0, 1.0, 0.0]]])
    active = torch.ones(1, 1)
    kl_ab = distillation_kl(a, b, active, 1.0).item()  # KL(p_b || p_a)
    assert kl_ab == pytest.approx(_kl(_softmax([0, 1, 0], 1), _softmax([3, 0, 0], 1)), rel=1e-5)
    assert kl_ab != pytest.approx(distillation_kl(b, a, active, 1.0).item(), rel=1e-3)


def test_perfect_match_reads_zero():
    z = torch.randn(2, 4, 5)
    active = torch.ones(2, 4)
    assert distillation_kl(z, z.clone(), active, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert refactoring_loss(z, z.clone(), active).item() == 0.0


def test_dm_gradient_reaches_only_the_multimodal_model():
    zm = torch.randn(2, 3, 4, requires_grad=True)
    zt = torch.randn(2, 3, 4, requires_grad=True)
    active = torch.ones(2, 3)
    terms = mutual_distillation_loss(zm, zt, active, alpha=0.5, beta=0.5, temperature=2.0)
    terms["kd_m"].backward()
    assert zm.grad is not None and zm.grad.abs().sum() > 0
    assert zt.grad is None
    zm.grad = None
    terms = mutual_distillation_loss(zm, zt, active, alpha=0.5, beta=0.5, temperature=2.0)
    terms["kd_t"].backward()
    assert zt.grad is not None and zt.grad.abs().sum() > 0
    assert zm.grad is None


def test_mutual_distillation_weights_alpha_beta():
    zm, zt = torch.randn(1, 5, 3), torch.randn(1, 5, 3)
    active = torch.ones(1, 5)
    t = mutual_distillation_loss(zm, zt, active, alpha=0.3, beta=0.7, temperature=2.0)
    assert t["distill"].item() == pytest.approx(0.3 * t["kd_m"].item() + 0.7 * t["kd_t"].item())


def test_refactoring_loss_is_mean_squared_l2_over_active_utterances():
    z = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [5.0, 5.0]]])
    z0 = torch.tensor([[[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    active = torch.tensor([[1.0, 1.0, 0.0]])  # third utterance inactive
    assert refactoring_loss(z, z0, active).item() == pytest.approx((5.0 + 1.0) / 2)
    ilc = ilc_loss(z, z0, z0, z0, active, gamma=0.5, delta=0.25)
    assert ilc["ref"].item() == pytest.approx(0.5 * 3.0 + 0.25 * 0.0)


def test_inactive_and_padding_utterances_do_not_count():
    logits = torch.randn(1, 3, 4)
    labels = torch.tensor([[0, 1, 2]])
    only_first = torch.tensor([[1.0, 0.0, 0.0]])
    expected = torch.nn.functional.cross_entropy(logits[0, :1], labels[0, :1])
    got = classification_loss(logits, labels, only_first)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_weighted_cross_entropy_matches_torch():
    logits = torch.randn(2, 6, 4)
    labels = torch.randint(0, 4, (2, 6))
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    got = classification_loss(logits, labels, torch.ones(2, 6), class_weights=w)
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 4), labels.reshape(-1), weight=w
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_focal_loss_down_weights_easy_examples():
    labels = torch.tensor([[0]])
    easy = torch.tensor([[[5.0, 0.0]]])
    p = torch.softmax(easy[0, 0], 0)[0].item()
    got = classification_loss(easy, labels, torch.ones(1, 1), focal_gamma=2.0).item()
    assert got == pytest.approx(-((1 - p) ** 2) * math.log(p), rel=1e-5)


def test_total_loss_is_the_sum_of_eq15_terms():
    zm, zt = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    zm0, zt0 = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    labels = torch.randint(0, 3, (1, 4))
    active = torch.ones(1, 4)

    def cls(lg, lb, a):
        return classification_loss(lg, lb, a)

    t = mrd_total_loss(
        zm,
        zt,
        zm0,
        zt0,
        labels,
        active,
        cls_loss=cls,
        alpha=0.5,
        beta=0.5,
        gamma=0.5,
        delta=0.5,
        temperature=2.0,
        t2_scaling=False,
        l_reg=torch.tensor(0.1),
    )
    parts = t["cls_m"] + t["cls_t"] + 0.5 * (t["kd_m"] + t["kd_t"]) + 0.5 * (t["ref_m"] + t["ref_t"]) + 0.1
    assert t["total"].item() == pytest.approx(parts.item(), rel=1e-6)


def test_gain_probability_resamples_whole_dialogues():
    import numpy as np

    from mrd_cli.core.stats import gain_probability

    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    dialogue = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    old = np.array([0, 0, 0, 0, 0, 0, 0, 0])
    # Better on every dialogue: every resample shows the gain.
    assert gain_probability(y, y, old, dialogue, 3, resamples=200) == 1.0
    # The same predictions: a tie is never a gain.
    assert gain_probability(y, old, old, dialogue, 3, resamples=200) == 0.0
    # Better on dialogue 2 only: a resample without dialogue 2 shows no gain, which happens
    # with probability (2/3)^3 per resample.
    only_last = np.where(dialogue == 2, y, old)
    p = gain_probability(y, only_last, old, dialogue, 3, resamples=4000, seed=1)
    assert abs(p - (1 - (2 / 3) ** 3)) < 0.03

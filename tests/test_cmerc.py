"""CMERC's loss terms (``core/cmerc.py``) against hand computations, and against numbers the
published implementation (github HITSZ-HLT/CMERC: clloss.py and the loops of train_cm.py)
produced on the fixed inputs below."""

from __future__ import annotations

import math

import pytest
import torch

from mrd_cli.core.cmerc import (
    calibration_rank_loss,
    contrast_targets,
    scl_log_ratio,
    target_weights,
    weighted_scl,
)

# The published code's values on ``fixed_inputs`` (run once beside this code on the CPU;
# mrd's functions gave the same float32 values and the same targets, difference 0).
PUBLISHED = {"rank": 13.18370246887207, "mscl": 10.95519733428955, "cscl": 10.015137672424316}


def fixed_inputs():
    """Log-probabilities of a model and five variants (text, audio, visual, intra, inter),
    labels and utterance features, drawn from a seeded generator."""
    gen = torch.Generator().manual_seed(3)
    n, c = 12, 4
    logp = torch.log_softmax(torch.randn(n, c, generator=gen) * 2, -1)
    variants = [torch.log_softmax(torch.randn(n, c, generator=gen) * 2, -1) for _ in range(5)]
    labels = torch.randint(0, c, (n,), generator=gen)
    feats = torch.randn(n, 6, generator=gen)
    return logp, variants, labels, feats


def test_rank_loss_by_hand():
    p = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]))
    q1 = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]]))
    q2 = torch.log(torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.1, 0.8]]))
    y = torch.tensor([0, 1])
    # q1: utterance 0 surer (0.7 > 0.5), utterance 1 less sure; q2: a tie and less sure.
    want = math.log(0.7) - math.log(0.5)
    assert calibration_rank_loss(p, [q1, q2], y).item() == pytest.approx(want, rel=1e-6)
    p.requires_grad_(True)
    calibration_rank_loss(p, [q1, q2], y).backward()
    assert p.grad.tolist() == [[-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # only the model moves


def test_contrast_targets_by_hand():
    y = torch.tensor([0, 0, 0, 0, 0])
    p = torch.log(torch.tensor([[0.6, 0.4]] * 3 + [[0.4, 0.6], [0.4, 0.6]]))
    q = torch.log(torch.tensor([[0.3, 0.7], [0.9, 0.1], [0.55, 0.45], [0.9, 0.1], [0.3, 0.7]]))
    # right & variant wrong; both right, variant surer; both right, model surer;
    # model wrong & variant right; both wrong.
    assert contrast_targets(p, q, y).tolist() == [1, 0, 1, 0, 0]


def test_target_weights_by_hand():
    assert target_weights(torch.tensor([1, 0, 1, 1])).tolist() == pytest.approx(
        [4 / 3, 4, 4 / 3, 4 / 3]
    )
    assert target_weights(torch.tensor([0, 0])).tolist() == [1.0, 1.0]


def test_scl_log_ratio_by_hand():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    t = torch.tensor([1, 1, 0])
    cos = {(0, 1): 0.0, (0, 2): 1 / math.sqrt(2), (1, 2): 1 / math.sqrt(2)}
    s = {k: math.exp(v / 0.07) for k, v in cos.items()}
    s.update({(j, i): v for (i, j), v in list(s.items())})
    eps = 1e-7
    want = []
    for i in range(3):
        pos = sum((1 + eps if t[i] == t[j] else eps) * s[(i, j)] for j in range(3) if j != i)
        neg = sum((-eps if t[i] == t[j] else 1 - eps) * s[(i, j)] for j in range(3) if j != i)
        want.append(math.log(pos / (pos + neg)))
    assert scl_log_ratio(f, t).tolist() == pytest.approx(want, rel=1e-5)
    # The weighted loss over two target sets: -mean_i sum_v w_v[i] log_ratio_v[i].
    t2 = torch.tensor([0, 1, 1])
    w1, w2 = target_weights(t).tolist(), target_weights(t2).tolist()
    r2 = scl_log_ratio(f, t2).tolist()
    expected = -sum(w1[i] * want[i] + w2[i] * r2[i] for i in range(3)) / 3
    assert weighted_scl(f, [t, t2]).item() == pytest.approx(expected, rel=1e-5)


def test_weighted_scl_of_one_utterance_is_zero_as_published():
    assert weighted_scl(torch.ones(1, 3), [torch.tensor([1])]).item() == 0.0


def test_losses_match_the_published_implementation():
    logp, variants, labels, feats = fixed_inputs()
    targets = [contrast_targets(logp, q, labels) for q in variants]
    assert calibration_rank_loss(logp, variants, labels).item() == pytest.approx(
        PUBLISHED["rank"], abs=1e-5
    )
    assert weighted_scl(feats, targets[:3]).item() == pytest.approx(PUBLISHED["mscl"], abs=1e-5)
    assert weighted_scl(feats, targets[3:]).item() == pytest.approx(PUBLISHED["cscl"], abs=1e-5)

"""Every loss term of MRD, one function per equation of the paper.

All terms take logits shaped [B, L, C] and an ``active`` weight [B, L] (1 for utterances of
the current curriculum stage, 0 for padding and inactive ones) and return the mean over the
active utterances. Masked means instead of boolean indexing keep shapes static (no host
synchronisation on CUDA).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mean(values: Tensor, active: Tensor) -> Tensor:
    """Mean of per-utterance ``values`` [B, L] over the active utterances (0 if none)."""
    active = active.to(values.dtype)
    return (values * active).sum() / active.sum().clamp_min(1.0)


def classification_loss(
    logits: Tensor,
    labels: Tensor,
    active: Tensor,
    class_weights: Tensor | None = None,
    focal_gamma: float | None = None,
) -> Tensor:
    """L_cls of Eq. 15: cross-entropy, optionally class-weighted, or focal loss.

    With class weights the mean is weighted as in ``F.cross_entropy(weight=...)``:
    sum_i w_{y_i} * ce_i / sum_i w_{y_i}.
    """
    logp = F.log_softmax(logits, dim=-1)
    logp_true = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    per_utt = -logp_true
    if focal_gamma is not None:
        per_utt = per_utt * (1.0 - logp_true.exp()).pow(focal_gamma)
    weight = active.to(logits.dtype)
    if class_weights is not None:
        weight = weight * class_weights[labels]
    return (per_utt * weight).sum() / weight.sum().clamp_min(1e-12)


def distillation_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    active: Tensor,
    temperature: float,
    t2_scaling: bool = False,
) -> Tensor:
    """KL(stopgrad(p_teacher^T) || p_student^T), averaged over active utterances.

    This is L_dm (Eq. 3: student = multimodal, teacher = text) and L_dt (Eq. 4: student =
    text, teacher = multimodal). The teacher is detached, so the gradient reaches only the
    student. KL differs from the paper's soft cross-entropy by the teacher's entropy, a
    constant for the student: same gradient, and a perfect match reads 0.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    loss = masked_mean(kl, active)
    return loss * (t * t) if t2_scaling else loss


def control_teacher(
    logits: Tensor, active: Tensor, mode: str, generator: torch.Generator | None = None
) -> Tensor:
    """The teacher logits of a negative control (``distill.teacher_control``), detached.

    "permuted": the rows of the active utterances shuffled among themselves (same target
    distribution, no link to the utterance); "uniform": zeros, a uniform target everywhere;
    "none": ``logits`` unchanged.
    """
    if mode == "none":
        return logits
    out = torch.zeros_like(logits.detach())
    if mode == "uniform":
        return out
    flat, rows = logits.detach().reshape(-1, logits.shape[-1]), torch.nonzero(active.reshape(-1))
    rows = rows.flatten()
    order = torch.randperm(
        len(rows), generator=generator, device=generator.device if generator else None
    )
    out.reshape(-1, logits.shape[-1])[rows] = flat[rows[order.to(rows.device)]]
    return out


def mutual_distillation_loss(
    multi_logits: Tensor,
    text_logits: Tensor,
    active: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    t2_scaling: bool = False,
    teachers: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """MIC, Eq. 5: L_distill = alpha * L_dm + beta * L_dt.

    ``teachers`` (for the multimodal model, for the text model) replaces the partners'
    logits as targets: the negative control (``control_teacher``) and ``distill.teacher``
    other than "partner" pass it.
    Returns ``{"kd_m": L_dm, "kd_t": L_dt, "distill": L_distill}``.
    """
    for_multi, for_text = teachers if teachers is not None else (text_logits, multi_logits)
    l_dm = distillation_kl(multi_logits, for_multi, active, temperature, t2_scaling)
    l_dt = distillation_kl(text_logits, for_text, active, temperature, t2_scaling)
    return {"kd_m": l_dm, "kd_t": l_dt, "distill": alpha * l_dm + beta * l_dt}


def refactoring_loss(logits: Tensor, frozen_logits: Tensor, active: Tensor) -> Tensor:
    """L_rm (Eq. 6) / L_rt (Eq. 7): mean over active utterances of ||z - z^0||^2.

    ``frozen_logits`` come from the model's frozen pre-distillation copy.
    """
    sq = (logits - frozen_logits.detach()).pow(2).sum(-1)
    return masked_mean(sq, active)


def ilc_loss(
    multi_logits: Tensor,
    multi_frozen: Tensor,
    text_logits: Tensor,
    text_frozen: Tensor,
    active: Tensor,
    gamma: float,
    delta: float,
) -> dict[str, Tensor]:
    """ILC, Eq. 8, the refactoring losses of ILC: L_ref = gamma * L_rm + delta * L_rt.

    Returns ``{"ref_m": L_rm, "ref_t": L_rt, "ref": L_ref}``.
    """
    l_rm = refactoring_loss(multi_logits, multi_frozen, active)
    l_rt = refactoring_loss(text_logits, text_frozen, active)
    return {"ref_m": l_rm, "ref_t": l_rt, "ref": gamma * l_rm + delta * l_rt}


def l2_penalty(parameters: Iterable[Tensor], weight: float) -> Tensor:
    """L_reg of Eq. 15: ``weight`` times the sum of squared trainable parameters."""
    params = [p for p in parameters if p.requires_grad]
    if weight == 0 or not params:
        return torch.zeros((), device=params[0].device if params else None)
    return weight * sum(p.pow(2).sum() for p in params)


def class_weights_from_labels(labels: Tensor, mask: Tensor, num_classes: int) -> Tensor:
    """Inverse-frequency class weights n / (C * n_c) over real training utterances.

    Classes absent from the data get weight 0 (they cannot appear as a target).
    """
    counts = torch.bincount(labels[mask], minlength=num_classes).to(torch.float32)
    total = counts.sum()
    weights = torch.where(counts > 0, total / (num_classes * counts.clamp_min(1)), 0.0)
    return weights


def mrd_total_loss(
    multi_logits: Tensor,
    text_logits: Tensor,
    multi_frozen: Tensor,
    text_frozen: Tensor,
    labels: Tensor,
    active: Tensor,
    *,
    cls_loss,
    alpha: float,
    beta: float,
    gamma: float,
    delta: float,
    temperature: float,
    t2_scaling: bool,
    l_reg: Tensor,
    teachers: tuple[Tensor, Tensor] | None = None,
    cls_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Eq. 15: L_total = w * (L_cls(multi) + L_cls(text)) + L_distill + L_ref + L_reg.

    ``cls_loss(logits, labels, active)`` is the configured L_cls; ``l_reg`` the L2 term of
    both models. Every term is averaged over the ``active`` utterances of the curriculum
    stage. ``teachers``: see ``mutual_distillation_loss`` (the partners' own logits when
    None). ``cls_weight`` w is 1 in the paper (``distill.cls_weight``). Returns every term by
    name (``cls_*`` unweighted), ``total`` included.
    """
    terms: dict[str, Tensor] = {
        "cls_m": cls_loss(multi_logits, labels, active),
        "cls_t": cls_loss(text_logits, labels, active),
    }
    terms.update(
        mutual_distillation_loss(
            multi_logits, text_logits, active, alpha, beta, temperature, t2_scaling, teachers
        )
    )
    terms.update(
        ilc_loss(multi_logits, multi_frozen, text_logits, text_frozen, active, gamma, delta)
    )
    terms["reg"] = l_reg
    cls = terms["cls_m"] + terms["cls_t"]
    if cls_weight != 1.0:
        cls = cls_weight * cls
    terms["total"] = cls + terms["distill"] + terms["ref"] + l_reg
    return terms


def nt_xent(z_i: Tensor, z_j: Tensor, temperature: float) -> Tensor:
    """NT-Xent (SimCLR's normalised temperature-scaled cross-entropy) of two views [N, d].

    MER2024-SEMI's contrastive term, in the form its paper intends: rows are L2-normalised,
    s_ab = cos(z_a, z_b) / tau over the 2N rows of [z_i; z_j]; each row's positive is its
    counterpart in the other view, every other row is a negative, and the row itself is
    excluded. Returns the mean of -log softmax(s)_positive over the 2N rows. (The original
    code scores the self-similarity instead, without normalising: a different loss.)
    """
    n = z_i.shape[0]
    z = F.normalize(torch.cat([z_i, z_j]), dim=-1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)

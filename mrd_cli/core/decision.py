"""Why a distilled model is what it is: the one-line reason behind its chosen epoch.

A distilled checkpoint records its chosen epoch (0: the pretrained weights were kept), its
per-epoch validation history, the pretrained model's validation W-F1 and, when the start
guard decided (``distill.start_confidence``), the guard's outcome. ``distill_decision`` turns
these into what every display shows (`mrd distill`, `mrd run`, `mrd evaluate`, the JSON):
whether distillation changed the model, and why, in one line.
"""

from __future__ import annotations

from typing import Any


def distill_decision(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``{"changed": bool, "reason": str}`` for a distilled checkpoint's metadata."""
    epoch = ckpt.get("epoch")
    guard = ckpt.get("start_guard") or {}
    start = ckpt.get("start_val_weighted_f1")
    distill_cfg = (ckpt.get("config") or {}).get("distill") or {}
    need = distill_cfg.get("start_confidence", guard.get("required"))
    history = [h for h in ckpt.get("history") or [] if h.get("epoch", 0) > 0]
    best = max(history, key=lambda h: h["val_weighted_f1"], default=None)
    if epoch is None:
        return {"changed": False, "reason": "the checkpoint records no chosen epoch"}
    if start is None:  # keep_start: false
        return {
            "changed": True,
            "reason": f"epoch {epoch}: the best distillation epoch on validation "
            "(distill.keep_start false: the pretrained weights were not a candidate)",
        }
    if epoch == 0 and guard.get("kept_start"):
        return {
            "changed": False,
            "reason": f"best distillation epoch {guard['best_epoch']} beat the start on "
            f"validation ({guard['best_val_weighted_f1']:.2f} vs "
            f"{guard['start_val_weighted_f1']:.2f}) in {100 * guard['p_gain']:.0f}% of "
            f"bootstrap resamples, below distill.start_confidence {guard['required']:g}; "
            "kept the pretrained weights",
        }
    if epoch == 0:
        top = (
            f" (best distillation epoch {best['epoch']}: {best['val_weighted_f1']:.2f} vs "
            f"{start:.2f})"
            if best is not None
            else ""
        )
        return {
            "changed": False,
            "reason": f"no distillation epoch beat the pretrained weights on validation{top}; "
            "kept the pretrained weights",
        }
    val = (ckpt.get("val_metrics") or {}).get("weighted_f1")
    score = f" ({val:.2f} vs {start:.2f})" if val is not None else ""
    if guard:
        sure = (
            f" in {100 * guard['p_gain']:.0f}% of bootstrap resamples "
            f"(distill.start_confidence {guard['required']:g})"
        )
    elif need:
        sure = ""
    else:
        sure = " (distill.start_confidence 0: any higher score wins)"
    return {
        "changed": True,
        "reason": f"epoch {epoch} beat the pretrained weights on validation{score}{sure}; "
        "took the distilled weights",
    }

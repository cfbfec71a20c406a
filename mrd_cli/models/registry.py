"""The backbone registry: which network a ``ModelSpec`` builds, and what each one needs.

``model.backbone`` picks M_multi's network, ``model.text_backbone`` M_text's (dialogue or
m3net). A checkpoint stores its spec, whose ``backbone`` names the class that rebuilds it.

| name | network | modalities it reads |
|---|---|---|
| ``dialogue`` | ``dialogue.DialogueModel`` (mrd's speaker-aware dialogue network) | all configured |
| ``foal`` | ``foal.FoalNet`` | audio + visual; + text with ``text`` (mrd's extension) |
| ``dual`` | ``dual.DualModel`` (every loss and size is mrd's choice) | audio + visual + text |
| ``semi`` | ``semi.SemiModel`` (MER2024-SEMI's heads and soft voting) | all configured |
| ``m3net`` | ``m3net.M3Net`` (M3Net's hypergraph and frequency filtering) | all configured |
"""

from __future__ import annotations

from mrd_cli.errors import MRDError
from mrd_cli.models.dialogue import Backbone, DialogueModel, ModelSpec
from mrd_cli.models.dual import DualModel
from mrd_cli.models.foal import FoalNet
from mrd_cli.models.m3net import M3Net
from mrd_cli.models.semi import SemiModel

BACKBONES: dict[str, type[Backbone]] = {
    "dialogue": DialogueModel,
    "foal": FoalNet,
    "dual": DualModel,
    "semi": SemiModel,
    "m3net": M3Net,
}
DEFAULT_BACKBONE = "dialogue"


def check_backbone(name: str) -> None:
    """Refuse a name that is not in the registry."""
    if name not in BACKBONES:
        raise MRDError(f"Unknown backbone '{name}'; use one of {', '.join(BACKBONES)}.")


def backbone_modalities(name: str, options: dict, available: list[str]) -> list[str]:
    """The modalities backbone ``name`` reads, given the corpus's ``available`` ones.

    Foal-Net and DUAL need audio and visual features: on a corpus without them (a
    text-only corpus such as EmoryNLP) they refuse with an MRDError instead of running.
    """
    check_backbone(name)
    if name in ("dialogue", "semi", "m3net"):
        return list(available)
    needed = ["audio", "visual"]
    if name == "dual" or options.get("text", False):
        needed = ["text", *needed]
    missing = [m for m in needed if m not in available]
    if missing:
        what = " and ".join(needed)
        raise MRDError(
            f"Backbone '{name}' needs {what} features, and the data declares only "
            f"{', '.join(available)} (dataset.modalities); it lacks {', '.join(missing)}. "
            "Use --backbone dialogue on this corpus."
        )
    return needed


def backbone_departures(name: str) -> list[str]:
    """Where mrd's network ``name`` departs from its published code (empty when the class
    lists none); evaluation writes them beside the model's metrics."""
    return list(getattr(BACKBONES.get(name), "departures", ()))


def build_backbone(spec: ModelSpec) -> Backbone:
    """A fresh network for ``spec`` (its ``backbone`` picks the class)."""
    check_backbone(spec.backbone)
    return BACKBONES[spec.backbone](spec)

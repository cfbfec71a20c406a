"""The synthetic corpora's knobs and presets (sizes, class structure, noise levels).

``mrd_cli/data/synthetic.py`` documents the generative process they drive; the ``control``
preset is the positive control of docs/controls.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mrd_cli.data.layouts import IEMOCAP_LABELS, MELD_LABELS

__all__ = ["PRESETS", "Preset", "SyntheticKnobs"]


@dataclass(frozen=True)
class SyntheticKnobs:
    """Every difficulty knob of the generator, in one place for calibration."""

    # Shares of the utterance kinds (the rest are plain).
    context_dependent: float = 0.15
    text_misleading: float = 0.15
    av_misleading: float = 0.08
    # Label dynamics.
    mood_following: float = 0.6
    mood_shift: float = 0.3
    shared_mood: float = 0.4
    turn_switch: float = 0.75
    # Where the ambiguous local signal of a context-dependent utterance sits between the
    # mood's prototype (1.0) and another class's (0.0).
    ambiguous_mix: float = 0.5
    # Latent space and noise (standard deviations per latent dimension).
    latent_dim: int = 16
    text_noise: float = 1.3
    audio_noise: float = 2.2
    visual_noise: float = 2.6
    roberta_layer_noise: float = 1.2  # independent per layer, averaged away by 4 layers
    legacy_text_noise: float = 2.0  # extra noise of videoText over the text latent
    recording_offset: float = 0.5  # per (dialogue, speaker) offset of audio and visual
    feature_noise: float = 0.5  # per feature dimension, after the projection
    # Correlation of the prototypes of a preset's confusable class pairs.
    pair_similarity: float = 0.6
    # Share of the *training* split's labels replaced by another class (validation and test
    # labels stay clean); features are drawn from the true class. Used by the ``control``
    # preset (docs/controls.md).
    train_label_noise: float = 0.0


@dataclass(frozen=True)
class Preset:
    """Sizes and class structure of one synthetic corpus."""

    name: str
    layout: str  # "iemocap" or "meld": which community tuples are produced
    label_names: tuple[str, ...]
    priors: tuple[float, ...]
    # (split, dialogues, utterances); MELD's "dev" goes into trainVid and validIds.
    splits: tuple[tuple[str, int, int], ...]
    length_range: tuple[int, int]
    audio_dim: int
    visual_dim: int
    legacy_text_dim: int
    roberta_dim: int
    # Probabilities of 1, 2, 3, ... speakers in a dialogue.
    speaker_counts: tuple[float, ...]
    confusable: tuple[tuple[int, int], ...] = field(default_factory=tuple)
    # The preset's own knobs (None: the ``SyntheticKnobs`` defaults).
    knobs: SyntheticKnobs | None = None


_IEMOCAP_PRIORS = (0.06, 0.13, 0.22, 0.15, 0.13, 0.31)
_MELD_PRIORS = (0.47, 0.12, 0.03, 0.07, 0.17, 0.03, 0.11)

PRESETS: dict[str, Preset] = {
    "small": Preset(
        name="small",
        layout="iemocap",
        label_names=tuple(IEMOCAP_LABELS),
        priors=_IEMOCAP_PRIORS,
        splits=(("train", 80, 1520), ("test", 24, 456)),
        length_range=(8, 30),
        audio_dim=96,
        visual_dim=48,
        legacy_text_dim=32,
        roberta_dim=64,
        speaker_counts=(0.0, 1.0),
        confusable=((0, 4), (3, 5)),  # hap/exc, ang/fru
    ),
    "iemocap": Preset(
        name="iemocap",
        layout="iemocap",
        label_names=tuple(IEMOCAP_LABELS),
        priors=_IEMOCAP_PRIORS,
        splits=(("train", 120, 5810), ("test", 31, 1623)),
        length_range=(12, 110),
        audio_dim=1582,
        visual_dim=342,
        legacy_text_dim=100,
        roberta_dim=1024,
        speaker_counts=(0.0, 1.0),
        confusable=((0, 4), (3, 5)),
    ),
    "meld": Preset(
        name="meld",
        layout="meld",
        label_names=tuple(MELD_LABELS),
        priors=_MELD_PRIORS,
        splits=(("train", 1038, 9989), ("dev", 114, 1109), ("test", 280, 2610)),
        length_range=(1, 24),
        audio_dim=300,
        visual_dim=342,
        legacy_text_dim=600,
        roberta_dim=1024,
        speaker_counts=(0.1, 0.45, 0.25, 0.12, 0.08),
        confusable=((5, 6), (2, 3)),  # disgust/anger, fear/sadness
    ),
    # The positive control of docs/controls.md (learning with privileged information): few
    # training dialogues, noisy text, clean audio/visual, label noise in the training split
    # only, so that a multimodal teacher's soft predictions carry what the text model lacks.
    "control": Preset(
        name="control",
        layout="meld",  # for its official dev split: validation labels stay clean
        label_names=tuple(MELD_LABELS),
        priors=(0.26, 0.14, 0.08, 0.14, 0.18, 0.08, 0.12),
        splits=(("train", 30, 300), ("dev", 30, 300), ("test", 80, 800)),
        length_range=(4, 16),
        audio_dim=24,
        visual_dim=24,
        legacy_text_dim=16,
        roberta_dim=32,
        speaker_counts=(0.0, 0.6, 0.4),
        confusable=((5, 6), (2, 3)),
        knobs=SyntheticKnobs(
            context_dependent=0.0,
            text_misleading=0.0,
            av_misleading=0.0,
            latent_dim=8,
            text_noise=0.8,
            audio_noise=0.8,
            visual_noise=0.8,
            roberta_layer_noise=1.0,
            recording_offset=0.2,
            feature_noise=0.3,
            train_label_noise=0.5,
        ),
    ),
}

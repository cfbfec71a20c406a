"""Synthetic conversations in the community feature-file layouts, with MRD's phenomena built in.

The generator writes the same tuples as ``IEMOCAP_features.pkl`` / ``MELD_features_raw1.pkl``
and their RoBERTa companions, deterministically from a seed, so that the whole pipeline can
run (and be tested) without the real corpora. It is not a model of real speech; it is a
controlled world in which the things MRD is about are present in known amounts.

Generative process (all draws from ``numpy.random.default_rng(seed)``, fully vectorised):

1. **Dialogues.** Each split has a fixed number of dialogues and utterances (the real counts
   for the ``iemocap`` and ``meld`` presets); dialogue lengths are drawn within the preset's
   range so that every split's utterance total is exact. IEMOCAP-layout dialogues have two
   speakers, 'M' and 'F'; MELD-layout dialogues have 1-5 speakers, written as one-hot vectors
   of length 9. Turns switch speaker with probability ``turn_switch``.
2. **Moods (context).** Every speaker of a dialogue has a mood, a class drawn from the class
   priors (IEMOCAP-like or MELD-like, so the classes are imbalanced). With probability
   ``shared_mood`` the other speakers start in the first speaker's mood; with probability
   ``mood_shift`` a speaker's mood changes once, at a random turn.
3. **Utterance kinds.** Each utterance is one of
   - *context-dependent* (share ``context_dependent``): its label is the speaker's current
     mood and every modality carries only an ambiguous local signal, halfway between the
     mood's prototype and another class's, so only the dialogue context resolves it;
   - *text-misleading* (share ``text_misleading``): the text points to a wrong class while
     audio and visual carry the right one (the multimodal model should win: MCTI);
   - *audio/visual-misleading* (share ``av_misleading``): audio and visual both point to the
     same wrong class while the text is right (the text model should win: MITC);
   - *plain*: every modality points to the label.
   Labels of non-context-dependent utterances follow the speaker's mood with probability
   ``mood_following`` and are otherwise drawn from the priors, so context helps on them too.
4. **Features.** Each modality has one prototype per class in a ``latent_dim``-dimensional
   space (the preset's confusable pairs, e.g. hap/exc and ang/fru, get correlated
   prototypes). An utterance's latent is the prototype of the class its modality points to,
   plus Gaussian noise of the modality's level; audio and visual also get a per-speaker
   recording offset. A fixed random projection per modality maps the latent to the feature
   dimension, plus feature-level noise. The four RoBERTa layers project the text latent
   with a layer-specific scale, offset and independent latent noise, so the layer-normalised
   average is cleaner than any one layer; the legacy ``videoText`` is a noisier projection of
   the same text latent.

All knobs live in ``SyntheticKnobs`` (``data/presets.py``); their defaults make the multimodal model clearly
better than the text-only one while each is right where the other is wrong on a share of
the utterances. On ``small`` with configs/synthetic.yaml (``mrd run --dataset synthetic
--seed 0``, CPU, torch 2.13) the pretrained GRU models score 74.2 multimodal / 62.6
text-only test W-F1, and the multimodal one is right where the text one is wrong on 18.9%
of the test utterances (MCTI), the reverse on 7.2% (MITC). tests/test_synthetic_difficulty.py
checks the ranges these figures must stay in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrd_cli.data.layouts import write_iemocap, write_meld
from mrd_cli.data.presets import PRESETS, Preset, SyntheticKnobs
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_text

__all__ = [
    "PRESETS",
    "Preset",
    "SyntheticKnobs",
    "SyntheticTruth",
    "generate",
    "generate_with_truth",
    "write_generated",
    "write_synthetic",
]

_MELD_SPEAKER_WIDTH = 9
# MELD sentiment of each emotion (0 neutral, 1 positive, 2 negative), for the sentiment dicts.
_MELD_SENTIMENT = np.array([0, 1, 2, 2, 1, 2, 2])

_PLAIN, _CONTEXT, _TEXT_MISLEADS, _AV_MISLEADS = 0, 1, 2, 3


@dataclass
class SyntheticTruth:
    """What the generator knows and a model must infer, per dialogue id (``str``).

    Boolean masks mark the utterances of each phenomenon; ``mood`` is the speaker's mood at
    each utterance (the label of every context-dependent one).
    """

    text_misleading: dict[str, np.ndarray]
    av_misleading: dict[str, np.ndarray]
    context_dependent: dict[str, np.ndarray]
    mood: dict[str, np.ndarray]
    splits: dict[str, list[str]]
    # Training utterances whose label was replaced (``train_label_noise``).
    noisy_label: dict[str, np.ndarray] = field(default_factory=dict)

    def count(self, phenomenon: str) -> int:
        return int(sum(m.sum() for m in getattr(self, phenomenon).values()))


# --------------------------------------------------------------------------------------
# Pieces


def _dialogue_lengths(rng: np.random.Generator, n: int, total: int, lo: int, hi: int) -> np.ndarray:
    """``n`` lengths in [lo, hi] summing exactly to ``total`` (gamma-spread, capped)."""
    if not n * lo <= total <= n * hi:
        raise MRDError(f"Cannot split {total} utterances into {n} dialogues of {lo}-{hi}.")
    cap = hi - lo
    weights = rng.gamma(2.0, size=n)
    extra = rng.multinomial(total - n * lo, weights / weights.sum())
    # Move what overflows a cap to dialogues with room until nothing overflows.
    while (over := np.maximum(extra - cap, 0)).any():
        extra -= over
        room = (cap - extra).astype(np.float64)
        extra += rng.multinomial(int(over.sum()), room / room.sum())
    return extra + lo


def _prototypes(
    rng: np.random.Generator, k: int, dim: int, pairs: tuple[tuple[int, int], ...], rho: float
) -> np.ndarray:
    protos = rng.standard_normal((k, dim))
    for a, b in pairs:
        protos[b] = rho * protos[a] + np.sqrt(1.0 - rho**2) * protos[b]
    return protos


def _other_class(rng: np.random.Generator, y: np.ndarray, k: int) -> np.ndarray:
    """A uniformly drawn class different from ``y``, per element."""
    return (y + rng.integers(1, k, size=y.shape)) % k


def _segment_starts(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per utterance: its dialogue index and position; per dialogue: its first utterance."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    dialogue = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(int(lengths.sum())) - starts[dialogue]
    return dialogue, position, starts


# --------------------------------------------------------------------------------------
# Generation


def generate_with_truth(
    preset: str, seed: int, knobs: SyntheticKnobs | None = None
) -> tuple[str, tuple, tuple, SyntheticTruth]:
    """``generate`` plus the ground truth of the phenomena (for tests and calibration)."""
    if preset not in PRESETS:
        raise MRDError(f"Unknown synthetic preset '{preset}'; use one of {', '.join(PRESETS)}.")
    p = PRESETS[preset]
    kn = knobs or p.knobs or SyntheticKnobs()
    rng = np.random.default_rng(seed)
    k = len(p.label_names)
    priors = np.asarray(p.priors) / np.sum(p.priors)
    L = kn.latent_dim

    # The fixed world: prototypes and projections per modality.
    protos = {
        m: _prototypes(rng, k, L, p.confusable, kn.pair_similarity)
        for m in ("text", "audio", "visual")
    }
    dims = {
        "audio": p.audio_dim,
        "visual": p.visual_dim,
        "legacy": p.legacy_text_dim,
        "roberta": p.roberta_dim,
    }
    proj = {
        m: (rng.standard_normal((L, d)) / np.sqrt(L)).astype(np.float32) for m, d in dims.items()
    }
    layer_scale = np.array([0.5, 1.0, 2.0, 4.0], dtype=np.float32)
    layer_offset = rng.standard_normal((4, p.roberta_dim)).astype(np.float32)

    # 1. Dialogues and turns.
    split_names = [s for s, _, _ in p.splits]
    lengths = np.concatenate(
        [_dialogue_lengths(rng, nd, nu, *p.length_range) for _, nd, nu in p.splits]
    )
    split_of_dialogue = np.repeat(np.arange(len(p.splits)), [nd for _, nd, _ in p.splits])
    n_dlg, n_utt = len(lengths), int(lengths.sum())
    dialogue, position, starts = _segment_starts(lengths)
    counts = np.asarray(p.speaker_counts) / np.sum(p.speaker_counts)
    n_spk = np.minimum(rng.choice(np.arange(1, len(counts) + 1), size=n_dlg, p=counts), lengths)
    spk_u = n_spk[dialogue]
    step = np.where(rng.random(n_utt) < kn.turn_switch, rng.integers(1, np.maximum(spk_u, 2)), 0)
    step[starts] = 0
    turns = np.cumsum(step)
    speaker = (turns - turns[starts][dialogue]) % spk_u  # 0 .. n_spk-1 within the dialogue

    # 2. Moods per (dialogue, speaker slot), with a possible single shift.
    slots = len(counts)
    mood1 = rng.choice(k, size=(n_dlg, slots), p=priors)
    share = rng.random((n_dlg, slots)) < kn.shared_mood
    share[:, 0] = False
    mood1 = np.where(share, mood1[:, :1], mood1)
    mood2 = rng.choice(k, size=(n_dlg, slots), p=priors)
    shifts = rng.random((n_dlg, slots)) < kn.mood_shift
    shift_at = (rng.random((n_dlg, slots)) * lengths[:, None]).astype(np.int64)
    shifted = shifts[dialogue, speaker] & (position >= shift_at[dialogue, speaker])
    mood = np.where(shifted, mood2[dialogue, speaker], mood1[dialogue, speaker])

    # 3. Kinds and labels.
    kind_p = [
        1.0 - kn.context_dependent - kn.text_misleading - kn.av_misleading,
        kn.context_dependent,
        kn.text_misleading,
        kn.av_misleading,
    ]
    if min(kind_p) < 0:
        raise MRDError("SyntheticKnobs: the shares of the utterance kinds add up to more than 1.")
    kind = rng.choice(4, size=n_utt, p=kind_p)
    follows = (kind == _CONTEXT) | (rng.random(n_utt) < kn.mood_following)
    label = np.where(follows, mood, rng.choice(k, size=n_utt, p=priors))
    wrong = _other_class(rng, label, k)

    # 4. Latents per modality, then features.
    def latent(modality: str, misled: np.ndarray, noise: float) -> np.ndarray:
        pr = protos[modality]
        target = np.where(misled, wrong, label)
        z = pr[target]
        ctx = kind == _CONTEXT
        z[ctx] = kn.ambiguous_mix * pr[label[ctx]] + (1 - kn.ambiguous_mix) * pr[wrong[ctx]]
        return z + noise * rng.standard_normal((n_utt, L))

    z_text = latent("text", kind == _TEXT_MISLEADS, kn.text_noise)
    z_audio = latent("audio", kind == _AV_MISLEADS, kn.audio_noise)
    z_visual = latent("visual", kind == _AV_MISLEADS, kn.visual_noise)
    for z in (z_audio, z_visual):
        offsets = kn.recording_offset * rng.standard_normal((n_dlg, slots, L))
        z += offsets[dialogue, speaker]

    def project(z: np.ndarray, name: str) -> np.ndarray:
        x = z.astype(np.float32) @ proj[name]
        x += kn.feature_noise * rng.standard_normal(x.shape, dtype=np.float32)
        return x

    audio = project(z_audio, "audio")
    visual = project(z_visual, "visual")
    legacy = project(z_text + kn.legacy_text_noise * rng.standard_normal((n_utt, L)), "legacy")
    roberta = []
    for layer in range(4):
        z_layer = z_text + kn.roberta_layer_noise * rng.standard_normal((n_utt, L))
        roberta.append(layer_scale[layer] * project(z_layer, "roberta") + layer_offset[layer])

    # Label noise in the training split only, after the features were drawn from the truth.
    # (No draw at all without it, so the other presets' data stay bit-identical.)
    noisy = np.zeros(n_utt, dtype=bool)
    if kn.train_label_noise > 0:
        noisy = (split_of_dialogue[dialogue] == 0) & (rng.random(n_utt) < kn.train_label_noise)
        label = np.where(noisy, _other_class(rng, label, k), label)

    # Pack into the community tuples.
    if p.layout == "iemocap":
        ids = [f"syn{split_names[s][:2]}_{i:04d}" for i, s in enumerate(split_of_dialogue)]
    else:
        ids = list(range(n_dlg))  # MELD ids are ints
    keys = [str(i) for i in ids]
    bounds = list(zip(starts.tolist(), (starts + lengths).tolist(), strict=True))

    def per_dialogue(values: np.ndarray) -> dict:
        return {i: list(values[a:b]) for i, (a, b) in zip(ids, bounds, strict=True)}

    def per_dialogue_int(values: np.ndarray) -> dict:
        return {i: values[a:b].tolist() for i, (a, b) in zip(ids, bounds, strict=True)}

    if p.layout == "iemocap":
        # Speaker slot 0 is 'M' or 'F' at random per dialogue; slot 1 the other one.
        flip = rng.random(n_dlg) < 0.5
        symbol = np.where((speaker == 1) ^ flip[dialogue], "F", "M")
        speakers = {i: symbol[a:b].tolist() for i, (a, b) in zip(ids, bounds, strict=True)}
        utt_ids = {
            i: [f"{i}_{symbol[a + j]}{j:03d}" for j in range(b - a)]
            for i, (a, b) in zip(ids, bounds, strict=True)
        }
    else:
        onehot = np.eye(_MELD_SPEAKER_WIDTH, dtype=np.int64)[speaker]
        speakers = per_dialogue_int(onehot)
        utt_ids = {i: list(range(b - a)) for i, (a, b) in zip(ids, bounds, strict=True)}
    sentences = {
        i: [f"synthetic utterance {j} of dialogue {i}" for j in range(b - a)]
        for i, (a, b) in zip(ids, bounds, strict=True)
    }
    labels = per_dialogue_int(label)
    split_ids = {
        name: [ids[d] for d in np.flatnonzero(split_of_dialogue == s)]
        for s, name in enumerate(split_names)
    }
    layers = [per_dialogue(r) for r in roberta]
    if p.layout == "iemocap":
        features = (
            utt_ids,
            speakers,
            labels,
            per_dialogue(legacy),
            per_dialogue(audio),
            per_dialogue(visual),
            sentences,
            split_ids["train"],
            split_ids["test"],
        )
        # IEMOCAP has no official dev split: validIds stays empty (the loader holds out a
        # seeded share of the training dialogues).
        roberta_tuple = (
            speakers,
            labels,
            *layers,
            sentences,
            split_ids["train"],
            split_ids["test"],
            [],
        )
    else:
        sentiment = per_dialogue_int(_MELD_SENTIMENT[label])
        features = (
            utt_ids,
            speakers,
            labels,
            per_dialogue(legacy),
            per_dialogue(audio),
            per_dialogue(visual),
            sentences,
            split_ids["train"] + split_ids["dev"],  # trainVid holds train and dev
            split_ids["test"],
            sentiment,
        )
        roberta_tuple = (
            speakers,
            labels,
            sentiment,
            *layers,
            sentences,
            split_ids["train"],
            split_ids["test"],
            split_ids["dev"],
        )

    def masks(values: np.ndarray) -> dict[str, np.ndarray]:
        return {key: values[a:b].copy() for key, (a, b) in zip(keys, bounds, strict=True)}

    truth = SyntheticTruth(
        text_misleading=masks(kind == _TEXT_MISLEADS),
        av_misleading=masks(kind == _AV_MISLEADS),
        context_dependent=masks(kind == _CONTEXT),
        mood=masks(mood),
        splits={name: [str(i) for i in v] for name, v in split_ids.items()},
        noisy_label=masks(noisy),
    )
    return p.layout, features, roberta_tuple, truth


def generate(
    preset: str, seed: int, knobs: SyntheticKnobs | None = None
) -> tuple[str, tuple, tuple]:
    """(layout, features tuple, RoBERTa tuple) of a synthetic corpus, deterministic in ``seed``.

    ``layout`` is "iemocap" or "meld" and says which community tuples were produced (the
    ``small`` preset uses the IEMOCAP layout).
    """
    layout, features, roberta, _ = generate_with_truth(preset, seed, knobs)
    return layout, features, roberta


def write_generated(
    out_dir: Path, preset: str, seed: int, layout: str, features: tuple, roberta: tuple
) -> list[Path]:
    """Write generated tuples under the community file names, plus ``SYNTHETIC_DATA.txt``.

    The note says where the files came from, so that nobody mistakes them for the real corpus.
    """
    writer = write_iemocap if layout == "iemocap" else write_meld
    paths = writer(Path(out_dir), features, roberta)
    note = Path(out_dir) / "SYNTHETIC_DATA.txt"
    atomic_write_text(
        note,
        f"Synthetic data written by `mrd data synth --preset {preset} --seed {seed}` in the\n"
        f"{layout} community layout. It is NOT the real corpus: results on it say nothing about\n"
        "real emotion recognition. The generative process is documented in\n"
        "mrd_cli/data/synthetic.py.\n",
    )
    return [*paths, note]


def write_synthetic(
    preset: str, out_dir: Path, seed: int, knobs: SyntheticKnobs | None = None
) -> list[Path]:
    """Generate a preset and write it in its community layout to ``out_dir``."""
    layout, features, roberta = generate(preset, seed, knobs)
    return write_generated(Path(out_dir), preset, seed, layout, features, roberta)

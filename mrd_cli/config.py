"""Typed configuration: YAML file -> ``Config`` dataclasses -> the code that uses them.

A config has one section per pipeline step. The dataclasses below are the one source of
defaults; the built-in ``configs/<name>.yaml`` files set only what differs for their dataset.
``load_config`` starts from the defaults, applies the dataset's YAML (built in or a user's
file), then the user's ``--config`` overrides, then CLI options, and validates the result:
unknown keys are refused with the closest known key suggested, wrong types and out-of-range
values are refused.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from mrd_cli.errors import MRDError

BUILTIN_DATASETS = ("iemocap", "meld", "synthetic")
# The curriculum stages (partition groups at the curriculum's level), by name.
STAGES = ("difficult", "general", "simple")


@dataclass
class DatasetConfig:
    """Which corpus, in which community layout, from which files."""

    name: str = "synthetic"
    # Tuple layout of the feature files: "iemocap" (9-tuple + roberta 10-tuple),
    # "meld" (10-tuple + roberta 11-tuple) or "synthetic" (generated in memory).
    layout: Literal["iemocap", "meld", "synthetic"] = "synthetic"
    # File names, relative to --data-dir (default data/<name>) unless absolute.
    features_file: str = ""
    roberta_file: str = ""
    label_names: list[str] = field(default_factory=list)
    # "roberta": layer-normalised mean of roberta1..4 (the paper); "legacy": videoText.
    text_features: Literal["roberta", "legacy"] = "roberta"
    modalities: list[str] = field(default_factory=lambda: ["text", "audio", "visual"])
    # Share of training dialogues held out (seeded) for validation when the corpus has no
    # official validation split (IEMOCAP).
    val_fraction: float = 0.1
    # Size of the built-in synthetic corpus ("small" for quick runs; "iemocap"/"meld" for
    # full-size data with the real dimensions).
    synthetic_preset: Literal["small", "iemocap", "meld"] = "small"
    # Seed of the data itself (synthetic generation, IEMOCAP's validation dialogues). Kept
    # apart from the training seed so that every training seed sees the same split.
    data_seed: int = 0


@dataclass
class FoalConfig:
    """Foal-Net as M_multi's backbone (``model.backbone: foal``): alignment before fusion."""

    # Also concatenate the text vector at the classifier: mrd's extension (the paper is
    # audio + visual only).
    text: bool = False
    # Cross-attention layers each way (audio -> visual, visual -> audio); 2 in the paper.
    layers: int = 2
    avel_weight: float = 1.0  # weight of AVEL (1 in the original code)
    mem_weight: float = 0.1  # weight of MEM (0.1 in the original code)
    # Divide each row of AVEL by its number of same-label positives (SupCon-style); the
    # original code sums them unnormalised.
    avel_normalise: bool = False
    # AVEL's temperature. true (default): multiply by exp(tau), tau a learnable scalar
    # starting at log(1/0.07), as CLIP does (scale 14.3 at the start, at most 100): the
    # original code's initial value is CLIP's, so this is its evident intent. false: divide
    # by tau as the original code literally does (every similarity within +-0.38 at the
    # start, so AVEL hardly moves).
    clip_temperature: bool = True


@dataclass
class DualConfig:
    """DUAL as M_multi's backbone (``model.backbone: dual``). No paper or code defines
    DUAL's losses or sizes: every default here is mrd's own choice, untuned."""

    # The difference modules (SDM on audio, VDM on visual, the dynamic alignment loss and
    # the sentiment residual); false drops them, for ablation.
    difference: bool = True
    # VDM's difference: next minus current utterance (false) or current minus previous (true).
    causal: bool = False
    static_weight: float = 1.0  # weight of the static (audio-visual) alignment loss
    dynamic_weight: float = 1.0  # weight of the dynamic (SDM-VDM) alignment loss


@dataclass
class SemiConfig:
    """MER2024-SEMI's network (``model.backbone: semi``; ``mrd selftrain`` always builds it):
    one encoder and one classifier head per modality plus a fused head, soft-voted."""

    # Soft voting: the model's probabilities are the weighted mean of its heads' softmax
    # outputs (head name -> weight; a modality the model does not read is ignored). The
    # defaults are the original's 0.7 / 0.4 / 0.3 / 0.7, which gave text little weight
    # because its text features were weak; on RoBERTa-style features text is usually the
    # strongest stream, so consider raising "text".
    vote_weights: dict[str, float] = field(
        default_factory=lambda: {"audio": 0.7, "visual": 0.4, "text": 0.3, "fused": 0.7}
    )
    # The fused head also reads a bidirectional GRU over the dialogue (mrd's extension: the
    # original is utterance-level). false: the original's context-free fused head.
    context: bool = True


@dataclass
class M3NetConfig:
    """M3Net (``model.backbone: m3net`` or ``model.text_backbone: m3net``). Defaults: the
    published IEMOCAP command line; the MELD one is dropout 0.4, num_K 3, hidden 1024,
    text_linear false (configs/meld.yaml sets it). docs/backbones.md lists every departure."""

    hidden: int = 512  # width of the per-modality encoders (the published D_g)
    graph_hidden: int = 512  # width of the graph nodes (the published graph_h)
    num_L: int = 3  # hypergraph convolutions
    num_K: int = 4  # high/low-frequency graph convolutions
    dropout: float = 0.5  # between the text GRU's layers and before the classifier
    # Map the text features to ``hidden`` before the GRU (false: the published MELD run,
    # which feeds the 1024-d RoBERTa vector straight in; needs text width == hidden).
    text_linear: bool = True
    # Learned hyperedge and node weights indexed by position in the batch, as published;
    # false: all weights 1, so a dialogue's prediction does not depend on its batch.
    position_weights: bool = True
    # Positions are counted within groups of this many dialogues (the published batch size).
    position_group: int = 16


@dataclass
class ModelConfig:
    """The networks: M_multi's is ``backbone``, M_text's ``text_backbone``."""

    # M_multi's network: "dialogue" (mrd's speaker-aware dialogue network), "foal"
    # (Foal-Net, audio + visual), "dual" (DUAL, audio + visual, text at its decoder),
    # "semi" (MER2024-SEMI's per-modality heads with soft voting; what `mrd selftrain` trains)
    # or "m3net" (M3Net, CVPR 2023: multimodal hypergraph + frequency graph filtering).
    backbone: Literal["dialogue", "foal", "dual", "semi", "m3net"] = "dialogue"
    # M_text's network (on the text modality alone): "dialogue" or "m3net".
    text_backbone: Literal["dialogue", "m3net"] = "dialogue"
    hidden: int = 128
    encoder: Literal["gru", "transformer"] = "gru"
    layers: int = 1
    heads: int = 4
    dropout: float = 0.5
    foal: FoalConfig = field(default_factory=FoalConfig)
    dual: DualConfig = field(default_factory=DualConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    m3net: M3NetConfig = field(default_factory=M3NetConfig)


@dataclass
class PretrainConfig:
    """Supervised pretraining of M_multi and M_text; the epoch is chosen on validation W-F1."""

    epochs: int = 40
    lr: float = 1e-4
    batch_size: int = 16
    # L2 penalty on the parameters, added to the loss (L_reg of Eq. 15).
    l2: float = 1e-5
    loss: Literal["ce", "weighted_ce", "focal"] = "weighted_ce"
    focal_gamma: float = 2.0
    # Early stopping: stop once validation W-F1 has not improved for this many epochs,
    # counted within the second half of the schedule only (an early collapse is not a
    # plateau); 0 = off. The chosen epoch is still the best on validation. Also used by
    # the cross-fitted partition's fold models.
    patience: int = 10


@dataclass
class PartitionConfig:
    """How training utterances are split into difficult / general / simple (Eq. 9-13)."""

    # "cross_fit": out-of-fold predictions of fold models (honest); "in_sample": predictions
    # of the pretrained checkpoints on the data they were trained on.
    method: Literal["cross_fit", "in_sample"] = "cross_fit"
    folds: int = 5


@dataclass
class DistillConfig:
    """MRD: mutual distillation (MIC), refactoring (ILC), reverse curriculum (RCL)."""

    epochs: int = 30
    lr: float = 5e-5
    batch_size: int = 16
    alpha: float = 0.5  # weight of L_dm (kd_m), text -> multimodal (Eq. 5)
    beta: float = 0.5  # weight of L_dt (kd_t), multimodal -> text (Eq. 5)
    gamma: float = 0.5  # weight of L_rm (ref_m), multimodal refactoring (Eq. 8)
    delta: float = 0.5  # weight of L_rt (ref_t), text refactoring (Eq. 8)
    temperature: float = 2.0
    # Multiply the distillation terms by T^2 (Hinton); off in the paper.
    t2_scaling: bool = False
    l2: float = 1e-5
    loss: Literal["ce", "weighted_ce", "focal"] = "weighted_ce"
    focal_gamma: float = 2.0
    # Order of the curriculum stages: reverse = difficult, general, simple (Eq. 14);
    # forward = simple, general, difficult; none = every utterance in every epoch.
    curriculum: Literal["reverse", "forward", "none"] = "reverse"
    # Share of the distillation epochs given to each stage, keyed by stage name (so the
    # meaning does not depend on the curriculum order); normalised to sum 1.
    stage_fractions: dict[str, float] = field(
        default_factory=lambda: {"difficult": 0.3, "general": 0.3, "simple": 0.4}
    )
    # True: a stage adds its group to the earlier ones (the last stage sees all data).
    # False: a stage trains on its own group only.
    cumulative: bool = True
    # The pretrained pair is a candidate of the epoch choice ("epoch 0"): a model whose best
    # distillation epoch does not beat its own pretrained weights on validation keeps them.
    # false: always the best distillation epoch (the raw effect of distillation).
    keep_start: bool = True
    # With keep_start: a distillation epoch replaces the pretrained weights only if a paired
    # bootstrap over validation dialogues gives it the higher W-F1 in at least this share of
    # resamples, so that a gain within the validation split's noise is not taken for one.
    # 0: any higher validation W-F1 wins.
    start_confidence: float = 0.9
    # What the refactoring losses (Eq. 6-7) pull each model towards. "matched_dropout": its
    # frozen copy run with the same dropout mask as the model itself, so that L_rm / L_rt
    # measure only how far the weights moved (0 before the first step). "eval" (the paper's
    # literal reading): the frozen copy's eval-mode logits, against a model that trains
    # with dropout, so most of the term is dropout noise rather than drift.
    refactoring_target: Literal["matched_dropout", "eval"] = "matched_dropout"
    # Early stopping (0 = off): stop once neither model's validation W-F1 has improved for
    # this many epochs, counted only within the last curriculum stage, so that no stage is
    # ever cut short (the earliest stop is this many epochs into the last stage).
    patience: int = 5


@dataclass
class AblateConfig:
    """The ablation study: MRD and its variants over several seeds."""

    seeds: int = 5
    # True: each seed pretrains (and partitions) anew; False: one pretrained pair and one
    # partition are reused by every seed, only distillation is repeated.
    repretrain: bool = False
    # Paired bootstrap resamples over test utterances for the significance column.
    bootstrap: int = 1000


@dataclass
class ExecutorConfig:
    """What each independent unit of work (an ablation or comparison cell, a role's fold
    models, a tuning worker) asks of a worker under ``--executor ray`` or ``processes``; the
    local executor runs the units one after another in its own process and ignores these."""

    # CPU cores reserved for one unit: as many units run at once as fit the cores (Ray's,
    # or this machine's with ``--executor processes``).
    cpus_per_task: float = 1.0
    # GPUs reserved for one unit (fractions share a GPU); above 0 a unit trains on CUDA.
    gpus_per_task: float = 0.0


@dataclass
class SelftrainConfig:
    """`mrd selftrain` (MER2024-SEMI): a label budget, contrastive pretraining, supervised
    training and rounds of pseudo-labelling with per-class thresholds."""

    # Share of the training dialogues (whole dialogues, a draw seeded by ``seed``) whose
    # labels are kept; the others form the unlabelled pool. 1.0: every label, no pool.
    labeled_fraction: float = 1.0
    # Use the TEST split's features (never its labels) as the pool instead: what the
    # original did, and transductive; every output marks such a run.
    transductive: bool = False
    # Contrastive pretraining (NT-Xent between modalities and between original and noised
    # features) on labelled and unlabelled dialogues; 0 skips it.
    contrastive_epochs: int = 20
    contrastive_lr: float = 1.0e-3
    temperature: float = 0.5  # NT-Xent's temperature (fixed; the original learns nine)
    # Diffusion-style noise x~ = sqrt(abar_t) x + sqrt(1 - abar_t) eps on the standardised
    # inputs, one t ~ U{0..T-1} per batch, betas = linspace(sqrt(beta_start),
    # sqrt(beta_end), T)^2 ("scaled_linear"), as in the original.
    noise_steps: int = 100
    beta_start: float = 0.001
    beta_end: float = 0.1
    # Self-training rounds after the supervised round 0; each retrains from the
    # contrastive weights on the labelled + accepted pseudo-labelled utterances.
    rounds: int = 2
    epochs: int = 40  # supervised epochs per round (the epoch is chosen on validation W-F1)
    lr: float = 1.0e-3
    batch_size: int = 16
    l2: float = 1.0e-5
    loss: Literal["ce", "weighted_ce"] = "weighted_ce"
    patience: int = 10  # early stopping per round, as pretrain.patience (0 = off)
    # A pool utterance is accepted when its voted probability of the predicted class
    # exceeds that class's threshold (class name -> threshold in (0, 1]; 1 = never); a
    # class not listed uses default_threshold. The original: 0.99 for its frequent classes,
    # 0.85 for its rarer ones; the built-in configs set thresholds by that analogy.
    thresholds: dict[str, float] = field(default_factory=dict)
    default_threshold: float = 0.99
    # Which round's model is the result: "last" (the last round trained) or "val" (the
    # round with the best validation W-F1, round 0 included).
    select: Literal["last", "val"] = "last"


@dataclass
class Config:
    """The effective configuration of one run; saved as ``RUN/config.yaml``."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    ablate: AblateConfig = field(default_factory=AblateConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    selftrain: SelftrainConfig = field(default_factory=SelftrainConfig)
    seed: int = 0
    # torch's intra-op CPU threads for training commands (torch.set_num_threads); 0 = torch's
    # default, one per core. 1 by default: the GRU's small operations gain only 10-15% from
    # a second thread on an idle machine and lose several times that when another process
    # holds a core (README, "Performance").
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------
# Building and validating


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check ``value`` against a field annotation; return (ok, possibly coerced value)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return value in typing.get_args(annotation), value
    if origin in (list, typing.List):  # noqa: UP006
        (inner,) = typing.get_args(annotation)
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, item = _type_ok(item, inner)
            if not ok:
                return False, value
            out.append(item)
        return True, out
    if origin in (dict, typing.Dict):  # noqa: UP006
        key_type, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            return False, value
        mapped = {}
        for k, item in value.items():
            ok_key, k = _type_ok(k, key_type)
            ok, item = _type_ok(item, value_type)
            if not (ok_key and ok):
                return False, value
            mapped[k] = item
        return True, mapped
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            ok, coerced = _type_ok(value, arg)
            if ok:
                return True, coerced
        return False, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    return True, value


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (list, typing.List):  # noqa: UP006
        return f"a list of {_describe(typing.get_args(annotation)[0])}"
    if origin in (dict, typing.Dict):  # noqa: UP006
        key_type, value_type = typing.get_args(annotation)
        return f"a mapping of {_describe(key_type)} to {_describe(value_type)}"
    return getattr(annotation, "__name__", str(annotation))


def _apply(obj: Any, overrides: dict[str, Any], where: str) -> None:
    """Apply a (nested) dict of overrides onto a config dataclass, validating as it goes."""
    if not isinstance(overrides, dict):
        raise MRDError(f"Config section '{where or 'top level'}' must be a mapping.")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise MRDError(
                f"Unknown config key '{path}'.{hint} Known keys here: {', '.join(names)}."
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, path)
            continue
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise MRDError(f"Config key '{path}' must be {_describe(hints[key])}, got {value!r}.")
        numbers = (
            list(coerced.values())
            if isinstance(coerced, dict)
            else coerced
            if isinstance(coerced, list)
            else [coerced]
        )
        if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
            raise MRDError(f"Config key '{path}' must be a finite number, got {value!r}.")
        setattr(obj, key, coerced)


# The sections of ``model`` that belong to one backbone each.
BACKBONE_SECTIONS = ("foal", "dual", "semi", "m3net")


def model_in_use(model: Any) -> Any:
    """``model`` (a config's ``model`` section as a dict) without the settings of the
    backbones it does not use: what a pretrained network actually depends on, so that a
    change to ``model.foal`` leaves a dialogue network's checkpoints current. Anything
    that is not such a dict is returned as it is."""
    if not isinstance(model, dict):
        return model
    used = (model.get("backbone"), model.get("text_backbone", "dialogue"))
    return {k: v for k, v in model.items() if k not in BACKBONE_SECTIONS or k in used}


def validate(cfg: Config) -> Config:
    """Refuse out-of-range values with a message naming the key."""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise MRDError(f"Config key '{key}' {msg}, got {_get(cfg, key)!r}.")

    for section in ("pretrain", "distill"):
        need(_get(cfg, f"{section}.epochs") >= 1, f"{section}.epochs", "must be >= 1")
        need(_get(cfg, f"{section}.lr") > 0, f"{section}.lr", "must be > 0")
        need(_get(cfg, f"{section}.batch_size") >= 1, f"{section}.batch_size", "must be >= 1")
        need(_get(cfg, f"{section}.l2") >= 0, f"{section}.l2", "must be >= 0")
        need(_get(cfg, f"{section}.focal_gamma") >= 0, f"{section}.focal_gamma", "must be >= 0")
        need(_get(cfg, f"{section}.patience") >= 0, f"{section}.patience", "must be >= 0 (0 = off)")
    for key in ("alpha", "beta", "gamma", "delta"):
        need(getattr(cfg.distill, key) >= 0, f"distill.{key}", "must be >= 0 (a weight)")
    need(cfg.distill.temperature > 0, "distill.temperature", "must be > 0")
    need(
        0 <= cfg.distill.start_confidence < 1,
        "distill.start_confidence",
        "must be in [0, 1) (a share of bootstrap resamples)",
    )
    fr = cfg.distill.stage_fractions
    need(
        set(fr) == set(STAGES),
        "distill.stage_fractions",
        f"must give a fraction for each stage, {', '.join(STAGES)}, and nothing else",
    )
    need(
        all(f >= 0 for f in fr.values()) and sum(fr.values()) > 0,
        "distill.stage_fractions",
        "must hold non-negative numbers with a positive sum",
    )
    need(cfg.threads >= 0, "threads", "must be >= 0 (0 = one per core)")
    need(cfg.partition.folds >= 2, "partition.folds", "must be >= 2")
    need(cfg.ablate.seeds >= 1, "ablate.seeds", "must be >= 1")
    need(cfg.ablate.bootstrap >= 0, "ablate.bootstrap", "must be >= 0")
    need(cfg.executor.cpus_per_task > 0, "executor.cpus_per_task", "must be > 0")
    need(cfg.executor.gpus_per_task >= 0, "executor.gpus_per_task", "must be >= 0")
    need(cfg.model.hidden >= 2, "model.hidden", "must be >= 2")
    need(cfg.model.layers >= 1, "model.layers", "must be >= 1")
    need(cfg.model.heads >= 1, "model.heads", "must be >= 1")
    if cfg.model.encoder == "transformer":
        need(
            cfg.model.hidden % cfg.model.heads == 0,
            "model.heads",
            f"must divide model.hidden ({cfg.model.hidden}) for the transformer encoder",
        )
    for key in ("seed", "dataset.data_seed"):
        need(0 <= _get(cfg, key) < 2**32, key, "must be in [0, 2**32)")
    for key in ("pretrain.epochs", "distill.epochs", "partition.folds", "ablate.seeds"):
        need(_get(cfg, key) <= 1_000_000, key, "must be <= 1000000")
    for key in ("pretrain.batch_size", "distill.batch_size", "model.hidden", "model.layers"):
        need(_get(cfg, key) <= 1_000_000, key, "must be <= 1000000")
    need(cfg.model.heads <= 4096, "model.heads", "must be <= 4096")
    need(cfg.ablate.bootstrap <= 10_000_000, "ablate.bootstrap", "must be <= 10000000")
    need(
        is_safe_component(cfg.dataset.name),
        "dataset.name",
        "must be a plain name (letters, digits, '.', '_', '-'; not starting with '.'), "
        "as it names the run directory runs/<name>",
    )
    need(0 <= cfg.model.dropout < 1, "model.dropout", "must be in [0, 1)")
    need(cfg.model.foal.layers >= 1, "model.foal.layers", "must be >= 1")
    need(
        cfg.model.backbone in ("dialogue", "semi", "m3net")
        or cfg.model.hidden % cfg.model.heads == 0,
        "model.hidden",
        f"must be a multiple of model.heads ({cfg.model.heads}) for backbone "
        f"'{cfg.model.backbone}' (its attention splits hidden across heads)",
    )
    for key in ("foal.avel_weight", "foal.mem_weight", "dual.static_weight", "dual.dynamic_weight"):
        need(_get(cfg.model, key) >= 0, f"model.{key}", "must be >= 0 (a weight)")
    need(0 < cfg.dataset.val_fraction < 1, "dataset.val_fraction", "must be in (0, 1)")
    names = cfg.dataset.label_names
    need(
        len(set(names)) == len(names) and all(n.strip() for n in names),
        "dataset.label_names",
        "must be distinct, non-empty class names",
    )
    need(len(cfg.dataset.modalities) >= 1, "dataset.modalities", "must name a modality")
    unknown = set(cfg.dataset.modalities) - {"text", "audio", "visual"}
    need(not unknown, "dataset.modalities", "may contain only 'text', 'audio', 'visual'")
    need("text" in cfg.dataset.modalities, "dataset.modalities", "must contain 'text'")
    _validate_semi(cfg, need)
    _validate_m3net(cfg, need)
    return cfg


def _validate_m3net(cfg: Config, need: Any) -> None:
    """The ``model.m3net`` section."""
    m3 = cfg.model.m3net
    for key in ("hidden", "graph_hidden"):
        need(2 <= getattr(m3, key) <= 1_000_000, f"model.m3net.{key}", "must be in [2, 1000000]")
    need(m3.hidden % 2 == 0, "model.m3net.hidden", "must be even (a bidirectional GRU's width)")
    for key in ("num_L", "num_K"):
        need(0 <= getattr(m3, key) <= 1000, f"model.m3net.{key}", "must be in [0, 1000]")
    need(0 <= m3.dropout < 1, "model.m3net.dropout", "must be in [0, 1)")
    need(1 <= m3.position_group <= 1_000_000, "model.m3net.position_group", "must be >= 1")


def _validate_semi(cfg: Config, need: Any) -> None:
    """The ``model.semi`` and ``selftrain`` sections."""
    votes = cfg.model.semi.vote_weights
    need(
        set(votes) <= {"text", "audio", "visual", "fused"},
        "model.semi.vote_weights",
        "may name only the heads 'text', 'audio', 'visual' and 'fused'",
    )
    need(all(w >= 0 for w in votes.values()), "model.semi.vote_weights", "must be >= 0 (weights)")
    st = cfg.selftrain
    need(0 < st.labeled_fraction <= 1, "selftrain.labeled_fraction", "must be in (0, 1]")
    for key in ("contrastive_epochs", "rounds", "patience"):
        need(getattr(st, key) >= 0, f"selftrain.{key}", "must be >= 0")
        need(getattr(st, key) <= 1_000_000, f"selftrain.{key}", "must be <= 1000000")
    need(1 <= st.epochs <= 1_000_000, "selftrain.epochs", "must be in [1, 1000000]")
    need(1 <= st.batch_size <= 1_000_000, "selftrain.batch_size", "must be in [1, 1000000]")
    for key in ("lr", "contrastive_lr", "temperature"):
        need(getattr(st, key) > 0, f"selftrain.{key}", "must be > 0")
    need(st.l2 >= 0, "selftrain.l2", "must be >= 0")
    need(1 <= st.noise_steps <= 100_000, "selftrain.noise_steps", "must be in [1, 100000]")
    need(
        0 < st.beta_start <= st.beta_end < 1,
        "selftrain.beta_end",
        "must satisfy 0 < selftrain.beta_start <= selftrain.beta_end < 1",
    )
    need(
        all(0 < t <= 1 for t in st.thresholds.values()),
        "selftrain.thresholds",
        "must hold thresholds in (0, 1] (1 = never accept that class)",
    )
    need(0 < st.default_threshold <= 1, "selftrain.default_threshold", "must be in (0, 1]")
    # The class names are checked by `mrd selftrain` against the loaded corpus: a config
    # that renames the classes must not stop every other command.


_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def is_safe_component(name: str) -> bool:
    """A name that may become one path component: no separator, not '', '.', '..' or hidden,
    only letters, digits, '.', '_' and '-' (at most 128 characters)."""
    return isinstance(name, str) and _SAFE_COMPONENT.fullmatch(name) is not None


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps
    the last one silently, so a duplicated key or section would drop settings unseen)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a mapping key must be a plain value", key_node.start_mark
                    ) from None
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is given twice (first on line "
                        f"{seen[key].start_mark.line + 1}, again on line "
                        f"{key_node.start_mark.line + 1}); keep one",
                        None,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text like ``yaml.safe_load``, refusing duplicate keys; every YAML file
    ``mrd`` reads goes through here."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a clear MRDError."""
    if not path.is_file():
        raise MRDError(
            f"Config file not found: {path}. Check the path given to --config or --dataset."
        )
    try:
        data = load_yaml_text(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise MRDError(f"Config file {path} is not valid YAML: {detail}") from None
    except OSError as exc:
        raise MRDError(f"Could not read {path}: {exc.strerror or exc}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MRDError(f"Config file {path} must contain a mapping at the top level.")
    return data


def builtin_config_path(name: str) -> Path:
    """Path of a built-in config (configs/<name>.yaml).

    In a source checkout (editable install) that is the repository's ``configs/``; a wheel
    ships the same files as the package ``mrd_cli.configs``.
    """
    checkout = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("mrd_cli.configs").joinpath(f"{name}.yaml")))


def _check_dataset_file(path: Path, doc: dict[str, Any]) -> None:
    """A dataset YAML must say which corpus it is and in which layout; nothing falls back to
    the built-in synthetic corpus silently."""
    section = doc.get("dataset")
    if not isinstance(section, dict):
        raise MRDError(
            f"Dataset file {path} must have a 'dataset' section with at least 'name' and "
            "'layout' (iemocap, meld or synthetic)."
        )
    missing = [k for k in ("name", "layout") if k not in section]
    if missing:
        raise MRDError(
            f"Dataset file {path} lacks {' and '.join(f'dataset.{k}' for k in missing)}; "
            "give the corpus a name and its layout (iemocap, meld or synthetic)."
        )


def load_config(
    dataset: str,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Config, Path | None]:
    """Resolve ``--dataset`` (a built-in name or a YAML path) and ``--config`` into a Config.

    Returns the config and, for a dataset defined by a YAML file, that file's directory
    (relative file names in it are resolved against it).
    """
    cfg = Config()
    yaml_dir: Path | None = None
    if dataset in BUILTIN_DATASETS:
        _apply(cfg, read_yaml(builtin_config_path(dataset)), "")
    elif dataset.endswith((".yaml", ".yml")) or Path(dataset).is_file():
        path = Path(dataset)
        doc = read_yaml(path)
        _check_dataset_file(path, doc)
        _apply(cfg, doc, "")
        yaml_dir = path.resolve().parent
    else:
        close = difflib.get_close_matches(dataset, BUILTIN_DATASETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise MRDError(
            f"Unknown dataset '{dataset}'.{hint} Use one of {', '.join(BUILTIN_DATASETS)} "
            "or the path to a dataset YAML file."
        )
    if config_file is not None:
        _apply(cfg, read_yaml(config_file), "")
    if overrides:
        _apply(cfg, overrides, "")
    return validate(cfg), yaml_dir


# --------------------------------------------------------------------------------------
# Dotted keys (``distill.alpha``, ``distill.stage_fractions.difficult``): used by `mrd tune`


def key_type(cfg: Config, dotted: str) -> Any:
    """The type of the config key ``dotted``; an unknown key is refused with the closest
    known key suggested (as in a config file). A key inside a mapping field (a stage of
    ``distill.stage_fractions``) has the mapping's value type."""
    obj: Any = cfg
    parts = dotted.split(".")
    annotation: Any = None
    for i, part in enumerate(parts):
        if dataclasses.is_dataclass(obj):
            names = [f.name for f in dataclasses.fields(obj)]
            annotation = typing.get_type_hints(type(obj)).get(part)
        elif isinstance(obj, dict):
            names = [str(k) for k in obj]
            annotation = typing.get_args(annotation)[1] if part in obj else None
        else:
            names = []
        if part not in names:
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" Did you mean '{'.'.join([*parts[:i], close[0]])}'?" if close else ""
            known = f" Known keys here: {', '.join(names)}." if names else ""
            raise MRDError(f"Unknown config key '{dotted}'.{hint}{known}")
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    if dataclasses.is_dataclass(obj):
        raise MRDError(f"Config key '{dotted}' is a section; name a key inside it.")
    return annotation


def nested_overrides(cfg: Config, values: dict[str, Any]) -> dict[str, Any]:
    """Dotted ``values`` as a nested overrides mapping (what a ``--config`` file holds). A
    key inside a mapping field brings the field's other entries from ``cfg``, since a
    config file replaces a mapping whole."""
    out: dict[str, Any] = {}
    for dotted, value in values.items():
        parts = dotted.split(".")
        node, obj = out, cfg
        for part in parts[:-1]:
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
            if part not in node:
                node[part] = dict(obj) if isinstance(obj, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return out


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """A validated copy of ``cfg`` with the dotted ``values`` set (each key checked as a
    config file's would be)."""
    for dotted in values:
        key_type(cfg, dotted)
    out = copy.deepcopy(cfg)
    _apply(out, nested_overrides(cfg, values), "")
    return validate(out)


def value_fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` may be set on a key of type ``annotation``."""
    return _type_ok(value, annotation)[0]


def describe_type(annotation: Any) -> str:
    return _describe(annotation)

"""The config's sections: one dataclass per pipeline step, each key declared with its rules.

Every field is ``setting(default, *rules)`` (``config/schema.py``): the default and what the
key may hold, side by side; a check that spans fields of one section is a ``@cross_check``
method of that section. To add a key, add its field here with its rules; nothing else
needs to change. Every size has a sane upper bound (``MAX_*``), so that a typo such as
``threads: 100000`` is an ``Error:`` line rather than a crash in a runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import yaml

from mrd_cli.config.schema import (
    above,
    at_least,
    cross_check,
    each,
    interval,
    keys,
    length,
    one_of,
    plain_name,
    setting,
    where,
)
from mrd_cli.labels import label_names_problem

BUILTIN_DATASETS = ("iemocap", "meld", "synthetic")
# The curriculum stages (partition groups at the curriculum's level), by name.
STAGES = ("difficult", "general", "simple")
MODALITIES = ("text", "audio", "visual")

# Sane upper bounds of the sizes: far beyond any useful value, well below what would
# exhaust memory or a runtime's limits before the first step.
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536  # dialogues per batch
MAX_HIDDEN = 8_192
MAX_LAYERS = 64
MAX_HEADS = 256
MAX_CLASSES = 1_000
MAX_FOLDS = 100
MAX_SEEDS = 1_000
MAX_BOOTSTRAP = 1_000_000
MAX_THREADS = 1_024
MAX_CPUS = 1_024  # per unit of work
MAX_GPUS = 64  # per unit of work
MAX_ROUNDS = 1_000
MAX_NOISE_STEPS = 100_000
SEED_RANGE = interval(0, 2**32, "[)")
WEIGHT = at_least(0, note="a weight")


@dataclass
class DatasetConfig:
    """Which corpus, in which community layout, from which files."""

    name: str = setting("synthetic", plain_name("as it names the run directory runs/<name>"))
    # Tuple layout of the feature files: "iemocap" (9-tuple + roberta 10-tuple),
    # "meld" (10-tuple + roberta 11-tuple) or "synthetic" (generated in memory).
    layout: Literal["iemocap", "meld", "synthetic"] = "synthetic"
    # File names, relative to --data-dir (default data/<name>) unless absolute.
    features_file: str = ""
    roberta_file: str = ""
    label_names: list[str] = setting(
        [],
        where(
            lambda n: all(isinstance(s, str) for s in n) and label_names_problem(n) is None,
            "must be distinct, non-empty class names without invisible characters (two "
            "spellings that differ only in case, surrounding white space or Unicode form are "
            "one class)",
        ),
        length(0, MAX_CLASSES, f"may name at most {MAX_CLASSES} classes"),
    )
    # "roberta": layer-normalised mean of roberta1..4 (the paper); "legacy": videoText.
    text_features: Literal["roberta", "legacy"] = "roberta"
    modalities: list[str] = setting(
        list(MODALITIES),
        each(one_of(MODALITIES, "may contain only 'text', 'audio', 'visual'")),
        where(lambda m: "text" in m, "must contain 'text'"),
    )
    # Share of training dialogues held out (seeded) for validation when the corpus has no
    # official validation split (IEMOCAP).
    val_fraction: float = setting(0.1, interval(0, 1, "()"))
    # Size of the built-in synthetic corpus ("small" for quick runs; "iemocap"/"meld" for
    # full-size data with the real dimensions; "control": the positive control of
    # docs/controls.md, few dialogues and label noise in the training split).
    synthetic_preset: Literal["small", "iemocap", "meld", "control"] = "small"
    # Seed of the data itself (synthetic generation, IEMOCAP's validation dialogues). Kept
    # apart from the training seed so that every training seed sees the same split.
    data_seed: int = setting(0, SEED_RANGE)


@dataclass
class FoalConfig:
    """Foal-Net as M_multi's backbone (``model.backbone: foal``): alignment before fusion."""

    # Also concatenate the text vector at the classifier: mrd's extension (the paper is
    # audio + visual only).
    text: bool = False
    # Cross-attention layers each way (audio -> visual, visual -> audio); 2 in the paper.
    layers: int = setting(2, at_least(1, MAX_LAYERS))
    avel_weight: float = setting(1.0, WEIGHT)  # weight of AVEL (1 in the original code)
    mem_weight: float = setting(0.1, WEIGHT)  # weight of MEM (0.1 in the original code)
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
    static_weight: float = setting(
        1.0, WEIGHT
    )  # weight of the static (audio-visual) alignment loss
    dynamic_weight: float = setting(1.0, WEIGHT)  # weight of the dynamic (SDM-VDM) alignment loss


@dataclass
class SemiConfig:
    """MER2024-SEMI's network (``model.backbone: semi``; ``mrd selftrain`` always builds it):
    one encoder and one classifier head per modality plus a fused head, soft-voted."""

    # Soft voting: the model's probabilities are the weighted mean of its heads' softmax
    # outputs (head name -> weight; a modality the model does not read is ignored). The
    # defaults are the original's 0.7 / 0.4 / 0.3 / 0.7, which gave text little weight
    # because its text features were weak; on RoBERTa-style features text is usually the
    # strongest stream, so consider raising "text".
    vote_weights: dict[str, float] = setting(
        {"audio": 0.7, "visual": 0.4, "text": 0.3, "fused": 0.7},
        keys(
            (*MODALITIES, "fused"),
            "may name only the heads 'text', 'audio', 'visual' and 'fused'",
        ),
        each(at_least(0, note="weights")),
    )
    # The fused head also reads a bidirectional GRU over the dialogue (mrd's extension: the
    # original is utterance-level). false: the original's context-free fused head.
    context: bool = True


@dataclass
class M3NetConfig:
    """M3Net (``model.backbone: m3net`` or ``model.text_backbone: m3net``). Defaults: the
    published IEMOCAP command line; the MELD one is dropout 0.4, num_K 3, hidden 1024,
    text_linear false (configs/meld.yaml sets it). docs/backbones.md lists every departure."""

    # Width of the per-modality encoders (the published D_g).
    hidden: int = setting(512, at_least(2, MAX_HIDDEN))
    # Width of the graph nodes (the published graph_h).
    graph_hidden: int = setting(512, at_least(2, MAX_HIDDEN))
    num_L: int = setting(3, at_least(0, MAX_LAYERS))  # hypergraph convolutions
    num_K: int = setting(4, at_least(0, MAX_LAYERS))  # high/low-frequency graph convolutions
    # Between the text GRU's layers and before the classifier.
    dropout: float = setting(0.5, interval(0, 1, "[)"))
    # Map the text features to ``hidden`` before the GRU (false: the published MELD run,
    # which feeds the 1024-d RoBERTa vector straight in; needs text width == hidden).
    text_linear: bool = True
    # Learned hyperedge and node weights indexed by position in the batch, as published;
    # false: all weights 1, so a dialogue's prediction does not depend on its batch.
    position_weights: bool = True
    # Positions are counted within groups of this many dialogues (the published batch size).
    position_group: int = setting(16, at_least(1, MAX_BATCH))

    @cross_check("hidden")
    def hidden_is_even(self) -> str | None:
        return None if self.hidden % 2 == 0 else "must be even (a bidirectional GRU's width)"


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
    hidden: int = setting(128, at_least(2, MAX_HIDDEN))
    encoder: Literal["gru", "transformer"] = "gru"
    layers: int = setting(1, at_least(1, MAX_LAYERS))
    heads: int = setting(4, at_least(1, MAX_HEADS))
    dropout: float = setting(0.5, interval(0, 1, "[)"))
    foal: FoalConfig = field(default_factory=FoalConfig)
    dual: DualConfig = field(default_factory=DualConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    m3net: M3NetConfig = field(default_factory=M3NetConfig)

    @cross_check("hidden")
    def heads_split_hidden(self) -> str | None:
        """Attention (the transformer encoder's, Foal-Net's, DUAL's) splits hidden across heads."""
        if self.encoder == "transformer":
            user = "the transformer encoder"
        elif self.backbone in ("foal", "dual"):
            user = f"backbone '{self.backbone}'"
        else:
            return None
        if self.hidden % self.heads == 0:
            return None
        return (
            f"must be a multiple of model.heads ({self.heads}) for {user} "
            "(its attention splits hidden across heads)"
        )


@dataclass
class PretrainConfig:
    """Supervised pretraining of M_multi and M_text; the epoch is chosen on validation W-F1."""

    # 60, not 40: on EmoryNLP (the real corpus without a tuned config) validation W-F1 was
    # still rising at epoch 40 in 5 of 6 curves (3 seeds x 2 roles) and levels off by about
    # epoch 50 (docs/guarantees.md, "The generic defaults converge"); early stopping
    # (patience) ends a converged run sooner.
    epochs: int = setting(60, at_least(1, MAX_EPOCHS))
    lr: float = setting(1e-4, above(0))
    batch_size: int = setting(16, at_least(1, MAX_BATCH))
    # L2 penalty on the parameters, added to the loss (L_reg of Eq. 15).
    l2: float = setting(1e-5, at_least(0))
    loss: Literal["ce", "weighted_ce", "focal"] = "weighted_ce"
    focal_gamma: float = setting(2.0, at_least(0))
    # Early stopping: stop once validation W-F1 has not improved for this many epochs,
    # counted within the second half of the schedule only (an early collapse is not a
    # plateau); 0 = off. The chosen epoch is still the best on validation. Also used by
    # the cross-fitted partition's fold models.
    patience: int = setting(10, at_least(0, MAX_EPOCHS, note="0 = off"))


@dataclass
class PartitionConfig:
    """How training utterances are split into difficult / general / simple (Eq. 9-13)."""

    # "cross_fit": out-of-fold predictions of fold models (honest); "in_sample": predictions
    # of the pretrained checkpoints on the data they were trained on.
    method: Literal["cross_fit", "in_sample"] = "cross_fit"
    folds: int = setting(5, at_least(2, MAX_FOLDS))


@dataclass
class DistillConfig:
    """MRD: mutual distillation (MIC), refactoring (ILC), reverse curriculum (RCL)."""

    epochs: int = setting(30, at_least(1, MAX_EPOCHS))
    lr: float = setting(5e-5, above(0))
    batch_size: int = setting(16, at_least(1, MAX_BATCH))
    alpha: float = setting(0.5, WEIGHT)  # weight of L_dm (kd_m), text -> multimodal (Eq. 5)
    beta: float = setting(0.5, WEIGHT)  # weight of L_dt (kd_t), multimodal -> text (Eq. 5)
    gamma: float = setting(0.5, WEIGHT)  # weight of L_rm (ref_m), multimodal refactoring (Eq. 8)
    delta: float = setting(0.5, WEIGHT)  # weight of L_rt (ref_t), text refactoring (Eq. 8)
    temperature: float = setting(2.0, above(0))
    # Multiply the distillation terms by T^2 (Hinton); off in the paper.
    t2_scaling: bool = False
    l2: float = setting(1e-5, at_least(0))
    loss: Literal["ce", "weighted_ce", "focal"] = "weighted_ce"
    focal_gamma: float = setting(2.0, at_least(0))
    # Order of the curriculum stages: reverse = difficult, general, simple (Eq. 14);
    # forward = simple, general, difficult; none = every utterance in every epoch.
    curriculum: Literal["reverse", "forward", "none"] = "reverse"
    # Share of the distillation epochs given to each stage, keyed by stage name (so the
    # meaning does not depend on the curriculum order); normalised to sum 1.
    stage_fractions: dict[str, float] = setting(
        {"difficult": 0.3, "general": 0.3, "simple": 0.4},
        keys(
            STAGES,
            f"must give a fraction for each stage, {', '.join(STAGES)}, and nothing else",
            exact=True,
        ),
        where(
            lambda fr: all(f >= 0 for f in fr.values()) and sum(fr.values()) > 0,
            "must hold non-negative numbers with a positive sum",
        ),
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
    start_confidence: float = setting(
        0.9, interval(0, 1, "[)", note="a share of bootstrap resamples")
    )
    # What the refactoring losses (Eq. 6-7) pull each model towards. "matched_dropout": its
    # frozen copy run with the same dropout mask as the model itself, so that L_rm / L_rt
    # measure only how far the weights moved (0 before the first step). "eval" (the paper's
    # literal reading): the frozen copy's eval-mode logits, against a model that trains
    # with dropout, so most of the term is dropout noise rather than drift.
    refactoring_target: Literal["matched_dropout", "eval"] = "matched_dropout"
    # Early stopping (0 = off): stop once neither model's validation W-F1 has improved for
    # this many epochs, counted only within the last curriculum stage, so that no stage is
    # ever cut short (the earliest stop is this many epochs into the last stage).
    patience: int = setting(5, at_least(0, MAX_EPOCHS, note="0 = off"))
    # A NEGATIVE CONTROL, never for real use (docs/controls.md): what each model distils
    # from. "none": its partner's logits (MRD). "permuted": the partner's logits shuffled
    # across the batch's active utterances, so the targets keep their distribution but lose
    # their link to the utterance. "uniform": a constant (uniform) target for every utterance.
    teacher_control: Literal["none", "permuted", "uniform"] = "none"
    # Weight of each model's classification loss L_cls in L_total (Eq. 15) during
    # distillation. 1: the paper's Eq. 15. Below 1 the (possibly noisy) labels pull less
    # against the partner, as in generalised distillation's (1 - lambda) CE + lambda KD.
    # An experiment knob of the controls (docs/controls.md).
    cls_weight: float = setting(1.0, WEIGHT)
    # What each model distils from in L_dm / L_dt (Eq. 3-4). "partner": the partner's logits
    # of the same training pass (train mode, with dropout; the paper's MIC). "partner_eval":
    # the partner's current weights in eval mode (no dropout). "frozen": the partner's
    # pre-distillation weights in eval mode, fixed for the whole run (a fixed teacher, as in
    # generalised distillation). An experiment switch of the controls (docs/controls.md).
    teacher: Literal["partner", "partner_eval", "frozen"] = "partner"


@dataclass
class AblateConfig:
    """The ablation study: MRD and its variants over several seeds."""

    seeds: int = setting(5, at_least(1, MAX_SEEDS))
    # True: each seed pretrains (and partitions) anew; False: one pretrained pair and one
    # partition are reused by every seed, only distillation is repeated.
    repretrain: bool = False
    # Paired bootstrap resamples over test utterances for the significance column.
    bootstrap: int = setting(1000, at_least(0, MAX_BOOTSTRAP))


@dataclass
class ExecutorConfig:
    """What each independent unit of work (an ablation or comparison cell, a role's fold
    models, a tuning worker) asks of a worker under ``--executor ray`` or ``processes``; the
    local executor runs the units one after another in its own process and ignores these."""

    # CPU cores reserved for one unit: as many units run at once as fit the cores (Ray's,
    # or this machine's with ``--executor processes``).
    cpus_per_task: float = setting(1.0, above(0, MAX_CPUS))
    # GPUs reserved for one unit (fractions share a GPU); above 0 a unit trains on CUDA.
    gpus_per_task: float = setting(0.0, at_least(0, MAX_GPUS))


@dataclass
class SelftrainConfig:
    """`mrd selftrain` (MER2024-SEMI): a label budget, contrastive pretraining, supervised
    training and rounds of pseudo-labelling with per-class thresholds."""

    # Share of the training dialogues (whole dialogues, a draw seeded by ``seed``) whose
    # labels are kept; the others form the unlabelled pool. 1.0: every label, no pool.
    labeled_fraction: float = setting(1.0, interval(0, 1, "(]"))
    # Use the TEST split's features (never its labels) as the pool instead: what the
    # original did, and transductive; every output marks such a run.
    transductive: bool = False
    # Contrastive pretraining (NT-Xent between modalities and between original and noised
    # features) on labelled and unlabelled dialogues; 0 skips it.
    contrastive_epochs: int = setting(20, at_least(0, MAX_EPOCHS))
    contrastive_lr: float = setting(1.0e-3, above(0))
    # NT-Xent's temperature (fixed; the original learns nine).
    temperature: float = setting(0.5, above(0))
    # Diffusion-style noise x~ = sqrt(abar_t) x + sqrt(1 - abar_t) eps on the standardised
    # inputs, one t ~ U{0..T-1} per batch, betas = linspace(sqrt(beta_start),
    # sqrt(beta_end), T)^2 ("scaled_linear"), as in the original.
    noise_steps: int = setting(100, at_least(1, MAX_NOISE_STEPS))
    beta_start: float = setting(0.001, interval(0, 1, "()"))
    beta_end: float = setting(0.1, interval(0, 1, "()"))
    # Self-training rounds after the supervised round 0; each retrains from the
    # contrastive weights on the labelled + accepted pseudo-labelled utterances.
    rounds: int = setting(2, at_least(0, MAX_ROUNDS))
    # Supervised epochs per round (the epoch is chosen on validation W-F1).
    epochs: int = setting(40, at_least(1, MAX_EPOCHS))
    lr: float = setting(1.0e-3, above(0))
    batch_size: int = setting(16, at_least(1, MAX_BATCH))
    l2: float = setting(1.0e-5, at_least(0))
    loss: Literal["ce", "weighted_ce"] = "weighted_ce"
    # Early stopping per round, as pretrain.patience (0 = off).
    patience: int = setting(10, at_least(0, MAX_EPOCHS, note="0 = off"))
    # A pool utterance is accepted when its voted probability of the predicted class
    # exceeds that class's threshold (class name -> threshold in (0, 1]; 1 = never); a
    # class not listed uses default_threshold. The original: 0.99 for its frequent classes,
    # 0.85 for its rarer ones; the built-in configs set thresholds by that analogy.
    thresholds: dict[str, float] = setting(
        {},
        where(
            lambda th: all(0 < t <= 1 for t in th.values()),
            "must hold thresholds in (0, 1] (1 = never accept that class)",
        ),
    )
    default_threshold: float = setting(0.99, interval(0, 1, "(]"))
    # Which round's model is the result: "last" (the last round trained) or "val" (the
    # round with the best validation W-F1, round 0 included).
    select: Literal["last", "val"] = "last"
    # The class names of ``thresholds`` are checked by `mrd selftrain` against the loaded
    # corpus: a config that renames the classes must not stop every other command.

    @cross_check("beta_end")
    def noise_grows(self) -> str | None:
        if self.beta_start <= self.beta_end:
            return None
        return "must satisfy 0 < selftrain.beta_start <= selftrain.beta_end < 1"


@dataclass
class TrackingConfig:
    """Loggers of the training epochs besides RUN/<step>/<role>.metrics.jsonl (always
    written): TensorBoard event files, MLflow runs (``core/tracking.py``)."""

    loggers: list[Literal["tensorboard", "mlflow"]] = field(default_factory=list)
    # MLflow tracking URI; "" = a SQLite store in the run directory (RUN/mlflow.db).
    mlflow_uri: str = ""
    # MLflow experiment name; "" = mrd-<dataset name>.
    mlflow_experiment: str = ""


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
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = setting(0, SEED_RANGE)
    # torch's intra-op CPU threads for training commands (torch.set_num_threads); 0 = torch's
    # default, one per core. 1 by default: the GRU's small operations gain only 10-15% from
    # a second thread on an idle machine and lose several times that when another process
    # holds a core (README, "Performance").
    threads: int = setting(1, at_least(0, MAX_THREADS, note="0 = one per core"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

"""The ``Session``: everything a recipe needs (effective config, data, run directory,
device), and the helpers that build, load and describe models within it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mrd_cli.config import Config, load_config
from mrd_cli.core.checkpoint import check_matches_corpus, load_checkpoint, model_from_checkpoint
from mrd_cli.core.device import resolve_device
from mrd_cli.core.provenance import settings_differences
from mrd_cli.core.rundir import ROLES, RunDir
from mrd_cli.core.training import Selected
from mrd_cli.core.version import git_commit, mrd_version
from mrd_cli.data.corpus import Corpus
from mrd_cli.data.formats import load_corpus
from mrd_cli.data.tensors import SplitTensors, split_tensors
from mrd_cli.errors import MRDError
from mrd_cli.models.dialogue import Backbone, ModelSpec
from mrd_cli.models.registry import backbone_modalities, build_backbone


@dataclass
class Session:
    """Everything a step needs: the effective config, the data, where files go, the device.

    ``writable``: whether results may be saved in the run directory (False when the CLI
    found it read-only and the command only reads). ``tensor_cache``: the splits' device
    tensors, built once (``tensors``) and shared by the sessions of one corpus and device
    (``derive``, and the recipes' units that run in this process).
    """

    cfg: Config
    corpus: Corpus
    run: RunDir
    device: torch.device
    # Score every model on the test split after each training epoch, as a diagnostic kept
    # apart from everything that selects (``core/protocol_gap.py``); not part of the config.
    protocol_gap: bool = False
    writable: bool = True
    tensor_cache: dict[str, SplitTensors] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(
        cls,
        dataset: str,
        config: Path | str | None = None,
        data_dir: Path | str | None = None,
        run_dir: Path | str | None = None,
        device: str = "auto",
        overrides: dict[str, Any] | None = None,
        loading: Callable[[str], Any] | None = None,
    ) -> Session:
        """Resolve the config (dataset YAML, ``config`` file, ``overrides``), load the data
        once, pick the device. ``overrides`` is a nested dict of config keys (``None`` values
        are ignored); the run directory defaults to ``runs/<dataset name>``.

        ``loading(message)``, if given, returns a context manager wrapped around the data
        loading (the CLI shows a spinner with it).
        """
        cfg, yaml_dir = load_config(
            dataset, Path(config) if config else None, drop_none(overrides or {})
        )
        dev = resolve_device(device)
        data = Path(data_dir) if data_dir else None
        if loading is None:
            corpus = load_corpus(cfg.dataset, data, yaml_dir)
        else:
            with loading(f"Loading {cfg.dataset.name} features..."):
                corpus = load_corpus(cfg.dataset, data, yaml_dir)
        root = Path(run_dir) if run_dir is not None else Path("runs") / cfg.dataset.name
        return cls(cfg=cfg, corpus=corpus, run=RunDir(root), device=dev)

    def tensors(self, split: str) -> SplitTensors:
        """A split on the device (cached: built once per session)."""
        if split not in self.tensor_cache:
            self.tensor_cache[split] = split_tensors(self.corpus, split, self.device)
        return self.tensor_cache[split]

    def derive(self, cfg: Config, run: RunDir) -> Session:
        """The same data and device with another config or run directory, sharing the
        device tensors already built (same corpus, so the same tensors)."""
        return Session(
            cfg=cfg,
            corpus=self.corpus,
            run=run,
            device=self.device,
            protocol_gap=self.protocol_gap,
            tensor_cache=self.tensor_cache,
        )

    def build_model(self, role: str, backbone: str | None = None) -> Backbone:
        """A fresh model of ``role`` (multi or text) for this corpus and model config:
        M_multi's network is ``model.backbone``, M_text's ``model.text_backbone``, unless
        ``backbone`` names another (`mrd selftrain` builds ``semi`` for either role)."""
        cfg = self.cfg
        if backbone is None:
            backbone, options = role_backbone(cfg, role)
        else:
            section = getattr(cfg.model, backbone, None)
            options = asdict(section) if section is not None else {}
        mods = backbone_modalities(backbone, options, role_modalities(cfg, role))
        dims = self.corpus.input_dims
        spec = ModelSpec(
            modalities=mods,
            input_dims={m: dims[m] for m in mods},
            num_speakers=self.corpus.num_speakers,
            num_classes=self.corpus.num_classes,
            hidden=cfg.model.hidden,
            encoder=cfg.model.encoder,
            layers=cfg.model.layers,
            heads=cfg.model.heads,
            dropout=cfg.model.dropout,
            backbone=backbone,
            options=options,
        )
        return build_backbone(spec).to(self.device)

    def load_model(self, path: Path, made_by: str) -> tuple[Backbone, dict]:
        """Load a checkpoint, check it against the loaded data, rebuild its model."""
        ckpt = load_checkpoint(path, made_by)
        check_matches_corpus(ckpt, self.corpus)
        return model_from_checkpoint(ckpt, self.device), ckpt

    def checkpoint_meta(
        self, stage: str, role: str, selected: Selected, **extra: Any
    ) -> dict[str, Any]:
        """What a checkpoint of ``stage``/``role`` records besides its weights."""
        return {
            "stage": stage,
            "role": role,
            "dataset": self.corpus.name,
            "label_names": self.corpus.label_names,
            "data_fingerprint": self.corpus.fingerprint(),
            "seed": self.cfg.seed,
            "epoch": selected.epoch,
            "val_metrics": selected.val_metrics,
            "stopping": selected.stopping,
            "history": selected.history,
            "config": self.cfg.to_dict(),
            # For the model card (``core/card.py``): what the data was and who made the file.
            "val_source": self.corpus.val_source,
            "split_sizes": {
                s: {
                    "dialogues": len(self.corpus.splits[s]),
                    "utterances": self.corpus.num_utterances(s),
                }
                for s in ("train", "val", "test")
            },
            "mrd_version": mrd_version(),
            "git_commit": git_commit(),
            **extra,
        }

    def current_pretrained(self, role: str) -> dict[str, Any] | None:
        """``RUN/pretrain/<role>.pt`` if it exists and was made from this data, config and
        seed; else None."""
        path = self.run.pretrained(role)
        if not path.is_file():
            return None
        try:
            ckpt = load_checkpoint(path)
        except MRDError:
            return None
        # The same comparison that names the differences when a pair is refused.
        if settings_differences(ckpt, self.cfg.to_dict(), self.corpus.fingerprint()):
            return None
        return ckpt

    def pretrained_is_current(self) -> bool:
        """Both pretrained checkpoints exist and were made from this data, config and seed."""
        return all(self.current_pretrained(role) is not None for role in ROLES)


def role_modalities(cfg: Config, role: str) -> list[str]:
    """M_multi sees every configured modality; M_text sees the text alone."""
    return list(cfg.dataset.modalities) if role == "multi" else ["text"]


def role_backbone(cfg: Config, role: str) -> tuple[str, dict[str, Any]]:
    """The backbone of ``role`` and its settings: ``model.backbone`` for M_multi,
    ``model.text_backbone`` for M_text, each with its section (``model.foal``, ...)."""
    name = cfg.model.backbone if role == "multi" else cfg.model.text_backbone
    section = getattr(cfg.model, name, None)
    return name, (asdict(section) if section is not None else {})


# Added to the text model's seed when both models see the same inputs (see role_seed).
TEXT_SEED_OFFSET = 100_003


def role_seed(cfg: Config, role: str, seed: int) -> int:
    """The seed a model of ``role`` is initialised and trained with.

    On a corpus whose only declared modality is text, M_multi and M_text are the same network
    on the same inputs: with one seed they would be identical copies, agree on every
    utterance (an empty difficult group) and have nothing to teach each other. The text model
    then draws its own seed. With several modalities both use ``seed``, as they always have.
    """
    if role == "text" and role_modalities(cfg, "multi") == ["text"]:
        return seed + TEXT_SEED_OFFSET
    return seed


def build_model(corpus: Corpus, cfg: Config, role: str, device: torch.device) -> Backbone:
    """A fresh model of ``role`` without a session (the benchmark and tests use it)."""
    return Session(cfg=cfg, corpus=corpus, run=RunDir(Path(".")), device=device).build_model(role)


def signature(*parts: Any) -> str:
    """A hash of config sections, data fingerprint and seed: what a resumed state must match."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """Nested overrides without the options that were not given (``None``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = drop_none(v)
            if sub:
                out[k] = sub
        elif v is not None:
            out[k] = v
    return out

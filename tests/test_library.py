"""The public API: what ``mrd_cli`` exports, the README's library example, and the recipes
called as library functions."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

import mrd_cli
from mrd_cli import Session, ablate, distill, evaluate, partition, pretrain
from mrd_cli.config import Config
from mrd_cli.core.rundir import RunDir

README = Path(__file__).resolve().parents[1] / "README.md"


def test_public_api_is_exported():
    for name in ("Session", "pretrain", "partition", "distill", "evaluate", "ablate"):
        assert name in mrd_cli.__all__ and hasattr(mrd_cli, name)
    assert {"Config", "load_config", "MRDError", "__version__"} <= set(mrd_cli.__all__)


def _library_example() -> str:
    section = README.read_text().split("## Library use", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_library_example_runs(tmp_path, monkeypatch):
    code = _library_example()
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert "'simple'" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == [
        "pretrain/multi",
        "pretrain/text",
        "distill/multi",
        "distill/text",
    ]
    assert (tmp_path / "runs" / "library-demo" / "distill" / "multi.pt").is_file()


def _toy_session(root: Path, toy_corpus) -> Session:
    cfg = Config()
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 2
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 2
    cfg.ablate.bootstrap = 50
    return Session(cfg, toy_corpus, RunDir(root), torch.device("cpu"))


def test_recipes_return_results_whose_dicts_are_the_json_outputs(tmp_path, toy_corpus):
    session = _toy_session(tmp_path, toy_corpus)
    pre = pretrain(session).to_dict()
    assert pre["dataset"] == "toy" and set(pre["pretrain"]) == {"multi", "text"}
    assert pre["pretrain"]["multi"]["checkpoint"] == str(tmp_path / "pretrain" / "multi.pt")
    part = partition(session)
    assert "groups" in part.document and "groups" not in part.to_dict()
    dist = distill(session).to_dict()
    assert set(dist["distill"]) == {"multi", "text"}
    result = evaluate(session).to_dict()
    assert list(result)[:6] == [
        "dataset",
        "split",
        "labels",
        "num_utterances",
        "models",
        "ambiguity",
    ]
    assert result["ambiguity_models"] == {"multi": "distill/multi", "text": "distill/text"}


def test_ablation_reuses_finished_cells_instead_of_recomputing_them(tmp_path, toy_corpus):
    session = _toy_session(tmp_path, toy_corpus)
    first = ablate(session, [("rcl",)], seeds=1)
    assert first.computed == [("MRD", 0), ("MRD w/o RCL", 0)]
    again = ablate(session, [("rcl",)], seeds=1)
    assert again.computed == []
    assert again.to_dict() == first.to_dict()

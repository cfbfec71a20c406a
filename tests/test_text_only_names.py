"""On a text-only corpus M_multi sees the text alone: no table, figure or report calls it
multimodal; it is named for what it is, a second text model (another seed)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from conftest import make_toy_corpus
from rich.console import Console
from typer.testing import CliRunner

from mrd_cli import Session, ablate, distill, evaluate, partition, pretrain
from mrd_cli.cli.ablate import ablation_table
from mrd_cli.cli.app import app
from mrd_cli.cli.partition import partition_table
from mrd_cli.cli.render import print_evaluation
from mrd_cli.config import Config
from mrd_cli.core.rundir import TEXT_ONLY_MULTI, RunDir, role_labels, run_modalities


@pytest.fixture(scope="module")
def text_only_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Session, dict]:
    root = tmp_path_factory.mktemp("textonly") / "run"
    cfg = Config()
    cfg.dataset.modalities = ["text"]
    cfg.model.hidden = 8
    cfg.pretrain.epochs = 2
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 2
    cfg.ablate.bootstrap = 20
    session = Session(cfg, make_toy_corpus(), RunDir(root), torch.device("cpu"))
    pretrain(session)
    partition(session)
    distill(session)
    metrics = evaluate(session).to_dict()
    summary = ablate(session, [("rcl",)], seeds=1).to_dict()
    return session, {"metrics": metrics, "ablation": summary}


def _rendered(*tables) -> str:
    out = io.StringIO()
    console = Console(file=out, width=300)
    for table in tables:
        console.print(table)
    return out.getvalue()


def test_role_labels_name_m_multi_by_what_it_sees():
    labels = {"multi": "multimodal", "text": "text"}
    assert role_labels(labels, ["text", "audio", "visual"]) == labels
    assert role_labels(labels, None) == labels
    assert role_labels(labels, ["text"]) == {"multi": TEXT_ONLY_MULTI, "text": "text"}


def test_a_text_only_corpus_never_prints_multimodal(text_only_run, tmp_path: Path):
    session, results = text_only_run
    root = session.run.root
    assert run_modalities(root) == ["text"]
    shown = []
    # What the CLI prints of the evaluation, the partition and the ablation.
    out = io.StringIO()
    print_evaluation(Console(file=out, width=300), results["metrics"], confusion=True)
    shown.append(out.getvalue())
    doc = json.loads((root / "partition.json").read_text())
    shown.append(_rendered(partition_table(doc, session.corpus.label_names)))
    shown.append(_rendered(ablation_table(results["ablation"])))
    # `mrd report` and its files.
    res = CliRunner().invoke(app, ["report", str(root)])
    assert res.exit_code == 0, res.output
    shown.append(res.output)
    report_files = sorted((root / "report").glob("*.*"))
    assert report_files
    shown += [p.read_text() for p in report_files]
    everything = "\n".join(shown)
    assert "multimodal" not in everything.lower()
    assert TEXT_ONLY_MULTI in (root / "report" / "tables.md").read_text()
    assert f"Pretrained ({TEXT_ONLY_MULTI})" in everything


def test_a_text_only_corpus_figures_never_say_multimodal(text_only_run):
    pytest.importorskip("matplotlib")
    from matplotlib import pyplot as plt
    from matplotlib.text import Text

    from mrd_cli.core import figures
    from mrd_cli.recipes.plot import _figures

    session, _ = text_only_run
    figures.require_matplotlib()
    texts = []
    drawn = 0
    for _, draw in _figures(session.run, "test"):
        if isinstance(draw, str):
            continue
        fig = draw()
        if isinstance(fig, str):
            continue
        drawn += 1
        texts += [t.get_text() for t in fig.findobj(Text)]
        plt.close(fig)
    assert drawn >= 3  # confusion matrices, training curves, partition, ablation
    joined = "\n".join(texts)
    assert "multimodal" not in joined.lower()
    assert TEXT_ONLY_MULTI in joined

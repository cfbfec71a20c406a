"""`mrd plot` and `mrd report`: figures and paper tables from a real run directory, the
per-epoch history they read, the LaTeX and Markdown they write, and greyscale-safe styles."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_toy_corpus
from typer.testing import CliRunner

from mrd_cli import Session, ablate, distill, evaluate, partition, pretrain
from mrd_cli.cli.app import app
from mrd_cli.config import Config
from mrd_cli.core import figures
from mrd_cli.core.checkpoint import load_checkpoint
from mrd_cli.core.rundir import ROLES, RunDir
from mrd_cli.core.stats import significance_marks
from mrd_cli.core.tables import PaperTable, latex_escape, to_latex, to_markdown
from mrd_cli.errors import MRDError
from mrd_cli.recipes.report import build_tables, report

runner = CliRunner()
PNG_HEADER = b"\x89PNG\r\n\x1a\n"
TEX_ENGINES = ("pdflatex", "lualatex", "xelatex", "tectonic")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run directory on the toy corpus: pretrained and distilled pair, partition,
    test metrics and a 2-seed ablation (MRD and MRD w/o RCL)."""
    root = tmp_path_factory.mktemp("toy") / "run"
    cfg = Config()
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 3
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 4
    cfg.distill.patience = 0
    cfg.ablate.bootstrap = 50
    session = Session(cfg, make_toy_corpus(), RunDir(root), torch.device("cpu"))
    pretrain(session)
    partition(session)
    distill(session)
    evaluate(session)
    ablate(session, [("rcl",)], seeds=2)
    return root


def _latex_cells(line: str) -> int:
    """Cells of one tabular row (``&`` not escaped as ``\\&``)."""
    return len(re.findall(r"(?<!\\)&", line)) + 1


def _check_latex_table(tex: str, columns: int) -> None:
    """booktabs rules in order, one cell per column in every row, balanced environments."""
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    body = tex[tex.index("\\toprule") : tex.index("\\bottomrule")]
    rows = [line for line in body.splitlines() if line.endswith("\\\\")]
    assert rows and all(_latex_cells(r) == columns for r in rows)
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", tex).group(1)
    assert len(spec) == columns
    for env in ("tabular", "table"):
        assert tex.count(f"\\begin{{{env}") == tex.count(f"\\end{{{env}")
    # No raw special character outside the escapes (a bare % would comment out the rest).
    assert not re.search(r"(?<!\\)[%_#]", tex.replace("\\label{tab:mrd-", ""))


# --------------------------------------------------------------------------------------
# The per-epoch history the training curves read


def test_checkpoints_keep_the_history_their_selected_epoch_comes_from(toy_run: Path) -> None:
    run = RunDir(toy_run)
    for stage, path_of in (("pretrain", run.pretrained), ("distill", run.distilled)):
        for role in ROLES:
            ckpt = load_checkpoint(path_of(role))
            history = ckpt["history"]
            by_epoch = {h["epoch"]: h["val_weighted_f1"] for h in history}
            # The chosen epoch's W-F1 in the history is the one the checkpoint was chosen by.
            assert by_epoch[ckpt["epoch"]] == pytest.approx(ckpt["val_metrics"]["weighted_f1"])
            last = 3 if stage == "pretrain" else 4
            assert sorted(by_epoch) == list(range(0 if stage == "distill" else 1, last + 1))
    stages = load_checkpoint(run.distilled("multi"))["curriculum_stages"]
    assert [s for s, _ in stages] == ["difficult", "general", "simple"][: len(stages)]
    assert sum(n for _, n in stages) == 4


# --------------------------------------------------------------------------------------
# Paper tables


def test_report_tables_restate_the_run_results(toy_run: Path) -> None:
    tables, skipped = build_tables(RunDir(toy_run))
    assert [t.name for t in tables] == ["ambiguity", "partition", "f1", "ablation"]
    assert skipped == {}
    metrics = json.loads((toy_run / "metrics" / "test.json").read_text())
    by_name = {t.name: t for t in tables}
    # Tables 1-2: the pretrained pair (the paper's pilot study) and the distilled pair.
    by_stage = metrics["ambiguity_by_stage"]
    assert by_stage["distill"] == metrics["ambiguity"]
    amb = by_name["ambiguity"]
    assert amb.columns[1:3] == ["MCTI pretrained", "MITC pretrained"]
    total = amb.rows[-1]
    assert total[0] == "Total"
    assert int(total[1]) == sum(by_stage["pretrain"]["mcti"].values())
    assert int(total[4]) == sum(by_stage["distill"]["mitc"].values())
    assert int(total[-1]) == metrics["num_utterances"]
    hap = amb.rows[0]
    assert int(hap[2]) == by_stage["pretrain"]["mitc"][hap[0]]
    part = json.loads((toy_run / "partition.json").read_text())
    assert [int(c) for c in by_name["partition"].rows[-1][1:5]] == [
        part["totals"][g] for g in ("mcti", "mitc", "general", "simple")
    ]
    # Table 4: the Δ row is the distilled model's change over the pretrained one.
    f1 = by_name["f1"]
    delta = f1.rows[2]
    assert delta[0] == "Δ"
    pre, dis = metrics["models"]["pretrain/multi"], metrics["models"]["distill/multi"]
    assert float(delta[-1]) == pytest.approx(dis["weighted_f1"] - pre["weighted_f1"], abs=0.006)
    # Table 5: one row per (model, role), mean ± std over the seeds.
    abl = by_name["ablation"]
    results = json.loads((toy_run / "ablation" / "results.json").read_text())
    assert len(abl.rows) == len(results["rows"])
    mrd = next(r for r in results["rows"] if r["name"] == "MRD")
    row = next(r for r in abl.rows if r[0] == "MRD (multimodal)")
    w = mrd["weighted_f1"]
    assert row[len(results["labels"]) + 1] == f"{w['mean']:.2f} ± {w['std']:.2f}"


def test_report_writes_markdown_and_latex_of_every_table(toy_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(toy_run, tmp_path / "run"))
    result = report(run)
    assert set(result.tables) == {"ambiguity", "partition", "f1", "ablation"}
    tables, _ = build_tables(RunDir(run))
    for table in tables:
        files = result.tables[table.name]
        md = Path(files["markdown"]).read_text()
        assert md.count("\n| ") == len(table.rows) + 1  # header + rows
        _check_latex_table(Path(files["latex"]).read_text(), len(table.columns))
    standalone = Path(result.combined["standalone"]).read_text()
    assert "\\usepackage{booktabs}" in standalone
    assert standalone.count("\\begin{tabular}") == len(tables)
    assert standalone.rstrip().endswith("\\end{document}")


def test_report_leaves_out_the_delta_when_the_provenance_chain_is_broken(toy_run: Path) -> None:
    metrics = json.loads((toy_run / "metrics" / "test.json").read_text())
    metrics["provenance"] = {"consistent": False, "problems": ["distill/multi: other partition"]}
    from mrd_cli.recipes.report import f1_table

    assert all(row[0] != "Δ" for row in f1_table(metrics).rows)


def test_report_of_a_run_without_results_names_the_commands(tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    assert "Nothing to report" in res.output and "mrd evaluate" in res.output


@pytest.mark.skipif(
    not any(shutil.which(e) for e in TEX_ENGINES), reason="no TeX engine on this machine"
)
def test_standalone_latex_compiles(toy_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(toy_run, tmp_path / "run"))
    tex = Path(report(run).combined["standalone"])
    engine = next(e for e in TEX_ENGINES if shutil.which(e))
    args = [engine, tex.name] if engine == "tectonic" else [engine, "-halt-on-error", tex.name]
    done = subprocess.run(args, cwd=tex.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert tex.with_suffix(".pdf").stat().st_size > 0


def test_latex_escapes_special_characters_and_symbols() -> None:
    assert latex_escape("MRD w/o MIC & ILC") == r"MRD w/o MIC \& ILC"
    assert latex_escape("95% of x_1 #2") == r"95\% of x\_1 \#2"
    assert latex_escape("1.0 ± 0.2, Δ") == r"1.0 $\pm$ 0.2, $\Delta$"


def test_paper_table_cells_are_escaped_per_format() -> None:
    table = PaperTable(
        "t", "A | B, 5% *", ["x_1", "y"], [["a|b", "1*"], ["c&d", "2"]], "lr", rules=[1]
    )
    md = to_markdown(table)
    assert "| a\\|b | 1\\* |" in md and "x\\_1" in md
    tex = to_latex(table)
    _check_latex_table(tex, 2)
    assert "c\\&d & 2 \\\\" in tex
    assert tex.count("\\midrule") == 2  # under the header, and before row 1
    with pytest.raises(ValueError):
        PaperTable("bad", "", ["a", "b"], [["1"]], "lr")


def test_significance_marks_follow_the_t_test_and_the_bootstrap_interval() -> None:
    assert significance_marks(0.03, [-0.5, 1.0]) == "*"
    assert significance_marks(0.004, [0.1, 1.0]) == "**†"
    assert significance_marks(0.0004, None) == "***"
    assert significance_marks(None, [-2.0, -0.1]) == "†"
    assert significance_marks(0.2, [-0.1, 0.3]) == ""
    assert significance_marks(None, [None, None]) == ""


# --------------------------------------------------------------------------------------
# Figures


def test_styles_survive_greyscale_printing() -> None:
    for styles in (figures.ROLE_STYLE, figures.GROUP_STYLE):
        grey = [figures.relative_luminance(s["color"]) for s in styles.values()]
        assert all(abs(a - b) >= 0.1 for a, b in combinations(grey, 2)), grey
        hatches = [s["hatch"] for s in styles.values()]
        assert len(set(hatches)) == len(hatches)
    lines = [(s["marker"], s["linestyle"]) for s in figures.ROLE_STYLE.values()]
    assert len(set(lines)) == len(lines)
    shades = [figures.relative_luminance(c) for c in figures.STAGE_SHADE.values()]
    assert len({round(g, 2) for g in shades}) == len(shades)


def test_plot_without_matplotlib_names_the_install_line(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MRDError, match=re.escape(figures.INSTALL_HINT)):
        figures.require_matplotlib()
    res = runner.invoke(app, ["plot", str(tmp_path)])
    assert res.exit_code == 2 and figures.INSTALL_HINT in res.output
    # --plots is refused before anything is trained.
    run = tmp_path / "run"
    res = runner.invoke(app, ["run", "--run-dir", str(run), "--plots", "--device", "cpu"])
    assert res.exit_code == 2 and figures.INSTALL_HINT in res.output
    assert not (run / "pretrain").exists()


def test_ablation_figure_marks_each_significant_difference() -> None:
    pytest.importorskip("matplotlib")

    def row(variant: str, role: str, mean: float, marks: str) -> dict:
        values = [mean - 0.5, mean + 0.5]
        return {
            "variant": variant,
            "role": role,
            "weighted_f1": {"mean": mean, "std": 0.7, "values": values},
            "marks": marks,
        }

    rows = [row("MRD", "multi", 60, "**"), row("MRD w/o MIC", "multi", 58, "")]
    rows += [row("MRD", "text", 55, "†"), row("MRD w/o MIC", "text", 54, "*")]
    fig = figures.ablation_figure(rows, "t", "note")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["**", "†", "*"])
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert sorted(round(b.get_height()) for b in bars) == [54, 55, 58, 60]
    # Error bars are the std: each bar's caps lie at its mean ± 0.7.
    spans = [
        (
            c.patches[0].get_height(),
            sorted(y for cap in c.errorbar.lines[1] for y in cap.get_ydata()),
        )
        for c in ax.containers
        if getattr(c, "errorbar", None) is not None
    ]
    assert len(spans) == 4
    for mean, (low, high) in spans:
        assert (low, high) == pytest.approx((mean - 0.7, mean + 0.7))
    assert ax.get_ylim()[0] > 0  # zoomed: the differences are a few points


def test_training_figure_shades_one_band_per_curriculum_stage() -> None:
    pytest.importorskip("matplotlib")
    stages = [("difficult", 2), ("general", 1), ("simple", 2)]
    curves = {r: [(e, 50.0 + e) for e in range(6)] for r in ROLES}
    panels = [
        {"title": "pretraining", "curves": {"multi": [(1, 40.0), (2, 45.0)]}, "selected": {}},
        {"title": "distillation", "curves": curves, "selected": {"multi": 3}, "stages": stages},
    ]
    fig = figures.training_figure(panels, "t")
    distill_ax = fig.axes[1]
    bands = sorted(
        (round(p.get_x(), 1), round(p.get_x() + p.get_width(), 1)) for p in distill_ax.patches
    )
    assert bands == [(0.5, 2.5), (2.5, 3.5), (3.5, 5.5)]
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"curriculum stage: difficult", "epoch chosen on validation"} <= labels


@pytest.mark.slow
def test_plot_draws_every_figure_of_a_real_run(toy_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = Path(shutil.copytree(toy_run, tmp_path / "run"))
    res = runner.invoke(app, ["plot", str(run), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    expected = {f"confusion_{s}_{r}" for s in ("pretrain", "distill") for r in ROLES}
    expected |= {"training_curves", "partition_groups", "ablation"}
    assert set(out["figures"]) == expected
    assert set(out["skipped"]) == {"tuning"}
    for files in out["figures"].values():
        png, svg = (Path(f) for f in files)
        assert png.parent == run / "plots" and png.read_bytes().startswith(PNG_HEADER)
        assert png.stat().st_size > 5000
        assert b"<svg" in svg.read_bytes()[:1000]
    # The SVG keeps its text: the class names are searchable in the confusion matrix.
    svg = (run / "plots" / "confusion_distill_multi.svg").read_text()
    assert all(f">{lab}<" in svg for lab in make_toy_corpus().label_names)


TINY = {
    "model": {"hidden": 16},
    "pretrain": {"epochs": 2, "batch_size": 32},
    "partition": {"method": "in_sample"},
    "distill": {"epochs": 3, "batch_size": 32},
    "ablate": {"bootstrap": 20},
}


@pytest.mark.slow
def test_plots_option_draws_after_run_ablate_and_tune(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("optuna")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    common = ["--config", str(cfg), "--run-dir", str(run), "--device", "cpu", "--json"]
    res = runner.invoke(app, ["run", *common, "--threads", "1", "--plots"])
    assert res.exit_code == 0, res.output
    assert "training_curves" in json.loads(res.stdout)["plots"]["figures"]
    res = runner.invoke(
        app, ["ablate", *common, "--seeds", "2", "--without", "mic", "--threads", "1", "--plots"]
    )
    assert res.exit_code == 0, res.output
    assert "ablation" in json.loads(res.stdout)["plots"]["figures"]
    res = runner.invoke(app, ["tune", *common, "--trials", "2", "--plots"])
    assert res.exit_code == 0, res.output
    drawn = json.loads(res.stdout)["plots"]["figures"]
    tuning = [name for name in drawn if name.startswith("tuning_")]
    assert tuning and (run / "plots" / f"{tuning[0]}.png").read_bytes().startswith(PNG_HEADER)
    res = runner.invoke(app, ["report", str(run), "--json"])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["tables"]) == {"ambiguity", "partition", "f1", "ablation"}


def test_a_malformed_results_file_is_one_error_naming_the_place(tmp_path: Path) -> None:
    # Results files are checked like any input (core/results_files.py): a damaged one is
    # an error naming the file, the place and the command that rewrites it.
    pytest.importorskip("matplotlib")
    (tmp_path / "partition.json").write_text('{"counts": {"mcti": 3}}')
    res = runner.invoke(app, ["plot", str(tmp_path)])
    assert res.exit_code == 2
    assert "counts.mcti is a int, not an object. Rerun `mrd partition`" in " ".join(
        res.output.split()
    )
    (tmp_path / "partition.json").unlink()
    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation" / "results.json").write_text('{"rows": 1}')
    with pytest.raises(MRDError, match="results.json is damaged: labels is missing"):
        report(tmp_path)

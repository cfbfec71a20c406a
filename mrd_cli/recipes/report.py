"""Recipe: the paper's tables from a run directory (`mrd report`), as Markdown and LaTeX.

Reads what the other steps saved, trains and loads nothing:

| table | paper | from |
|---|---|---|
| ``ambiguity`` | Tables 1-2 | ``RUN/metrics/<split>.json`` (``mrd evaluate``): MCTI / MITC per class |
| ``partition`` | Tables 1-2, on the training split | ``RUN/partition.json``: the four groups per class |
| ``f1`` | Table 4 | ``RUN/metrics/<split>.json``: per-class F1 and W-F1, pretrained vs distilled |
| ``ablation`` | Table 5 | ``RUN/ablation/results.json`` (``mrd ablate``): mean ± std, Δ, significance |
| ``protocol_gap`` | none (a diagnostic) | the above and ``RUN/compare/results.json``, for models trained with ``--protocol-gap`` |

Writes ``RUN/report/<table>.md`` and ``.tex`` for each table found, ``tables.md`` and
``tables.tex`` (all of them) and ``tables_standalone.tex`` (a document that compiles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mrd_cli.core.groups import GROUPS
from mrd_cli.core.protocol_gap import gap_table
from mrd_cli.core.results_files import read_results
from mrd_cli.core.rundir import ROLES, RunDir, role_labels, run_modalities
from mrd_cli.core.stats import SIGNIFICANCE_LEGEND, significance_marks
from mrd_cli.core.tables import PaperTable, latex_document, to_latex, to_markdown
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_text

ROLE_NAMES = {"multi": "multimodal", "text": "text"}
STAGE_NAMES = {"pretrain": "pretrained", "distill": "distilled"}
# Column headers of the partition groups, with the paper's names.
GROUP_HEADERS = {
    "mcti": "Difficult_1 (MCTI)",
    "mitc": "Difficult_2 (MITC)",
    "general": "General",
    "simple": "Simple",
}


@dataclass
class ReportResult:
    """The tables written (``tables``: name -> its Markdown and LaTeX files) and the ones
    left out, with the reason (``skipped``: name -> why)."""

    run_dir: str
    split: str
    tables: dict[str, dict[str, str]]
    skipped: dict[str, str] = field(default_factory=dict)
    combined: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "split": self.split,
            "tables": self.tables,
            "combined": self.combined,
            "skipped": self.skipped,
        }


def report(run_dir: Path, split: str = "test") -> ReportResult:
    """Write every paper table the run directory has the results for into ``RUN/report/``.

    A table whose results are missing is skipped with the command that makes them; a run
    directory with none of them is an error.
    """
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise MRDError(
            f"Run directory {run.root} does not exist. Pass the directory a run wrote (its "
            "--run-dir)."
        )
    tables, skipped = build_tables(run, split)
    if not tables:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items())
        raise MRDError(f"Nothing to report in {run.root} ({reasons}).")
    out = run.report
    written: dict[str, dict[str, str]] = {}
    for table in tables:
        md, tex = out / f"{table.name}.md", out / f"{table.name}.tex"
        atomic_write_text(md, to_markdown(table))
        atomic_write_text(tex, to_latex(table))
        written[table.name] = {"markdown": str(md), "latex": str(tex)}
    combined = {
        "markdown": out / "tables.md",
        "latex": out / "tables.tex",
        "standalone": out / "tables_standalone.tex",
    }
    atomic_write_text(combined["markdown"], "\n".join(to_markdown(t) for t in tables))
    atomic_write_text(combined["latex"], "\n".join(to_latex(t) for t in tables))
    atomic_write_text(
        combined["standalone"], latex_document(tables, f"mrd tables of {run.root.name}")
    )
    return ReportResult(
        run_dir=str(run.root),
        split=split,
        tables=written,
        skipped=skipped,
        combined={k: str(v) for k, v in combined.items()},
    )


def build_tables(run: RunDir, split: str = "test") -> tuple[list[PaperTable], dict[str, str]]:
    """The tables the run directory's results give, and why each other one is missing."""
    tables: list[PaperTable] = []
    skipped: dict[str, str] = {}
    metrics = read_results(run.metrics / f"{split}.json", "metrics")
    partition = read_results(run.partition, "partition")
    ablation = read_results(run.ablation / "results.json", "ablation")
    evaluate_hint = f"no {run.metrics / f'{split}.json'}; run `mrd evaluate --split {split}`"
    names = role_labels(ROLE_NAMES, run_modalities(run.root))
    candidates = [
        ("ambiguity", metrics, partial(ambiguity_table, names=names), evaluate_hint),
        (
            "partition",
            partition,
            partial(partition_table, names=names),
            "no partition.json; run `mrd partition`",
        ),
        ("f1", metrics, partial(f1_table, names=names), evaluate_hint),
        (
            "ablation",
            ablation,
            partial(ablation_table, names=names),
            "no ablation/results.json; run `mrd ablate`",
        ),
    ]
    for name, doc, build, missing in candidates:
        if doc is None:
            skipped[name] = missing
            continue
        try:
            table = build(doc)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            skipped[name] = f"its results file is malformed ({type(exc).__name__}: {exc})"
            continue
        if table is None:
            skipped[name] = "the results hold nothing for it"
        else:
            tables.append(table)
    try:  # the protocol-gap diagnostic, wherever a model was trained with --protocol-gap
        gap = gap_table(
            metrics, ablation, read_results(run.root / "compare" / "results.json", "comparison")
        )
    except (KeyError, TypeError, ValueError) as exc:
        gap, skipped["protocol_gap"] = None, f"malformed results ({type(exc).__name__}: {exc})"
    if gap is not None:  # optional: no entry in ``skipped`` without it
        tables.append(gap)
    if "ambiguity" in skipped and metrics is not None and not metrics.get("ambiguity"):
        skipped["ambiguity"] = "the metrics have no M_multi/M_text pair to compare"
    return tables, skipped


def _pct(x: float) -> str:
    return f"{x:.2f}"


def _signed(x: float) -> str:
    return f"{x:+.2f}"


# --------------------------------------------------------------------------------------
# The tables


def _multi_phrase(names: dict[str, str]) -> str:
    """M_multi in a sentence: "the multimodal model", or what it is on a text-only corpus."""
    if names["multi"] == ROLE_NAMES["multi"]:
        return "the multimodal model"
    return f"M_multi ({names['multi']})"


def ambiguity_table(
    metrics: dict[str, Any], names: dict[str, str] = ROLE_NAMES
) -> PaperTable | None:
    """Tables 1-2: per true class, utterances of the split the multimodal model gets right
    and the text model wrong (MCTI), and the reverse (MITC), for the pretrained pair (the
    paper's pilot study) and the distilled pair, with the class's size."""
    labels = metrics["labels"]
    by_stage = metrics.get("ambiguity_by_stage") or {}
    pairs = [(STAGE_NAMES[s], by_stage[s]) for s in ("pretrain", "distill") if s in by_stage]
    if not pairs and metrics.get("ambiguity"):  # metrics written before ambiguity_by_stage
        who = metrics.get("ambiguity_models") or {}
        pairs = [(f"{who.get('multi')} vs {who.get('text')}", metrics["ambiguity"])]
    if not pairs:
        return None
    support = _support(metrics)
    columns = ["Emotion"]
    for name, _ in pairs:
        columns += [f"MCTI {name}", f"MITC {name}"] if len(pairs) > 1 else ["MCTI", "MITC"]
    rows = []
    for lab in [*labels, "Total"]:
        row = [lab]
        for _, amb in pairs:
            for key in ("mcti", "mitc"):
                row.append(str(sum(amb[key].values()) if lab == "Total" else amb[key][lab]))
        if support:
            row.append(str(sum(support.values()) if lab == "Total" else support[lab]))
        rows.append(row)
    if support:
        columns.append("Utterances")
    stages = " and ".join(name for name, _ in pairs)
    return PaperTable(
        name="ambiguity",
        caption=(
            f"Ambiguity on the {metrics['split']} split of {metrics['dataset']} ({stages} "
            f"models): per class, the utterances {_multi_phrase(names)} classifies correctly "
            "and the text model incorrectly (MCTI), and the reverse (MITC)."
        ),
        columns=columns,
        rows=rows,
        align="l" + "r" * (len(columns) - 1),
        rules=[len(labels)],
    )


def _support(metrics: dict[str, Any]) -> dict[str, int] | None:
    """Utterances per true class (a row sum of any model's confusion matrix)."""
    entry = next(iter(metrics["models"].values()), None)
    matrix = entry.get("confusion_matrix") if entry else None
    if not matrix:
        return None
    return {lab: int(sum(row)) for lab, row in zip(metrics["labels"], matrix)}


def partition_table(doc: dict[str, Any], names: dict[str, str] = ROLE_NAMES) -> PaperTable | None:
    """The partition of the training utterances (Eq. 9-13) per class: the counterpart of
    Tables 1-2 on the data distillation trains on."""
    counts = doc["counts"]
    labels = list(next(iter(counts.values())))
    rows = []
    for lab in labels:
        cells = [counts[g][lab] for g in GROUPS]
        rows.append([lab, *map(str, cells), str(sum(cells))])
    totals = [sum(counts[g][lab] for lab in labels) for g in GROUPS]
    rows.append(["Total", *map(str, totals), str(sum(totals))])
    method = (
        f"cross-fitted predictions ({doc.get('folds')} folds)"
        if doc.get("method") == "cross_fit"
        else "in-sample predictions"
    )
    return PaperTable(
        name="partition",
        caption=(
            "Partition of the training utterances by the two pretrained models' "
            f"{method}: Difficult_1 (MCTI) {_multi_phrase(names).removeprefix('the ')} right "
            "and the text model wrong, Difficult_2 (MITC) the reverse, General both wrong, "
            "Simple both right."
        ),
        columns=["Emotion", *(GROUP_HEADERS[g] for g in GROUPS), "Total"],
        rows=rows,
        align="l" + "r" * (len(GROUPS) + 1),
        rules=[len(labels)],
    )


def f1_table(metrics: dict[str, Any], names: dict[str, str] = ROLE_NAMES) -> PaperTable | None:
    """Table 4: per-class F1 and W-F1 of each pretrained and distilled model, and the
    distilled model's change (left out when the run's provenance chain is broken)."""
    labels = metrics["labels"]
    models = metrics["models"]
    consistent = (metrics.get("provenance") or {}).get("consistent", True)
    rows: list[list[str]] = []
    rules: list[int] = []
    for role in ROLES:
        pre, dis = models.get(f"pretrain/{role}"), models.get(f"distill/{role}")
        if pre is None and dis is None:
            continue
        rules.append(len(rows))
        for stage, entry in (("Pretrained", pre), ("MRD", dis)):
            if entry is not None:
                cells = [_pct(entry["per_class_f1"][lab]) for lab in labels]
                rows.append([f"{stage} ({names[role]})", *cells, _pct(entry["weighted_f1"])])
        if pre is not None and dis is not None and consistent:
            cells = [_signed(dis["per_class_f1"][lab] - pre["per_class_f1"][lab]) for lab in labels]
            rows.append(["Δ", *cells, _signed(dis["weighted_f1"] - pre["weighted_f1"])])
    if not rows:
        return None
    return PaperTable(
        name="f1",
        caption=(
            f"F1 per class and weighted F1 (W-F1, %) on the {metrics['split']} split of "
            f"{metrics['dataset']}, before (Pretrained) and after Mutual Refinement "
            "Distillation (MRD); Δ is the distilled model's change."
        ),
        columns=["Model", *labels, "W-F1"],
        rows=rows,
        align="l" + "r" * (len(labels) + 1),
        rules=rules,
        wide=True,
    )


def ablation_table(
    summary: dict[str, Any], names: dict[str, str] = ROLE_NAMES
) -> PaperTable | None:
    """Table 5: per-class F1 and W-F1 as mean ± std over seeds, each row's W-F1 difference
    (MRD from the pretrained model, a variant from MRD) with its significance marks."""
    labels = summary["labels"]
    rows: list[list[str]] = []
    rules: list[int] = []
    last_role = None
    for row in sorted(summary["rows"], key=lambda r: ROLES.index(r["role"])):
        if row["role"] != last_role:
            rules.append(len(rows))
            last_role = row["role"]
        cells = [
            f"{row['per_class_f1'][lab]['mean']:.2f} ± {row['per_class_f1'][lab]['std']:.2f}"
            for lab in labels
        ]
        w = row["weighted_f1"]
        delta = ""
        if row.get("delta_wf1") is not None:
            marks = significance_marks(row.get("p_paired_t"), row.get("bootstrap_ci95"))
            delta = f"{_signed(row['delta_wf1'])}{marks}"
        p = row.get("p_paired_t")
        name = "Pretrained" if row["variant"] == "pretrained" else row["variant"]
        rows.append(
            [
                f"{name} ({names[row['role']]})",
                *cells,
                f"{w['mean']:.2f} ± {w['std']:.2f}",
                delta,
                "" if p is None else f"{p:.3f}",
            ]
        )
    if not rows:
        return None
    n = len(summary["seeds"])
    return PaperTable(
        name="ablation",
        caption=(
            f"Ablation on the {summary['split']} split of {summary['dataset']}: F1 per class "
            f"and W-F1 (%), mean ± std over {n} seed{'s' if n != 1 else ''} "
            f"({'each seed pretrained anew' if summary.get('repretrain') else 'one pretrained pair'}). "
            "Δ W-F1: MRD against the pretrained model, each variant against MRD, same "
            f"seeds and model. {SIGNIFICANCE_LEGEND}."
        ),
        columns=["Model", *labels, "W-F1", "Δ W-F1", "p (t-test)"],
        rows=rows,
        align="l" + "r" * (len(labels) + 3),
        rules=rules,
        wide=True,
    )

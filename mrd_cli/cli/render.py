"""Rich tables for results: metrics side by side, confusion matrices, the ambiguity table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mrd_cli.cli.common import shown
from mrd_cli.cli.protocol_gap import print_gap
from mrd_cli.core.metrics import row_normalised


def metrics_table(result: dict[str, Any], title: str | None = None) -> Table:
    """Per-class F1, W-F1, accuracy and macro F1 (percent), one column per model.

    When pretrained and distilled models are both present, a column shows the change of each
    distilled model over its pretrained one.
    """
    models = result["models"]
    names = list(models)
    deltas = [
        (f"distill/{r}", f"pretrain/{r}")
        for r in ("multi", "text")
        if f"distill/{r}" in models
        and f"pretrain/{r}" in models
        # No Δ between models whose provenance chain is broken (``core/provenance.py``).
        and not (result.get("provenance") or {}).get("problems")
    ]
    table = Table(
        title=title
        or f"{shown(result['dataset'])} — {shown(result['split'])} split "
        f"({result.get('num_utterances', '?')} utterances), percent",
        title_justify="left",
    )
    table.add_column("class / metric")
    for n in names:
        table.add_column(shown(n), justify="right")
    for d, _ in deltas:
        table.add_column(f"Δ {d.split('/')[1]}", justify="right")

    for cls in result["labels"]:
        cells = [f"{models[n]['per_class_f1'][cls]:.2f}" for n in names]
        for d, p in deltas:
            cells.append(_signed(models[d]["per_class_f1"][cls], models[p]["per_class_f1"][cls]))
        table.add_row(f"F1 {shown(cls)}", *cells)
    table.add_section()
    for label, key in (("W-F1", "weighted_f1"), ("Accuracy", "accuracy"), ("Macro F1", "macro_f1")):
        cells = [f"{models[n][key]:.2f}" for n in names]
        for d, p in deltas:
            cells.append(_signed(models[d][key], models[p][key]))
        table.add_row(label, *cells, style="bold" if key == "weighted_f1" else None)
    if any(models[n].get("epoch") is not None for n in names):
        table.add_section()
        table.add_row(
            "epoch chosen (val)",
            *[_epoch_cell(n, models[n].get("epoch")) for n in names],
            *["" for _ in deltas],
        )
        table.add_row(
            "val W-F1",
            *[
                f"{models[n]['val_weighted_f1']:.2f}"
                if models[n].get("val_weighted_f1") is not None
                else ""
                for n in names
            ],
            *["" for _ in deltas],
        )
    # Whether distillation changed each distilled model, and why (core/decision.py).
    why = [
        f"{n}: {'changed' if d['changed'] else 'unchanged'}, {d['reason']}"
        for n in names
        if (d := models[n].get("distillation"))
    ]
    if why:
        table.caption = "\n".join(why)
        table.caption_justify = "left"
    return table


def _signed(new: float, old: float) -> Text:
    diff = new - old
    style = "green" if diff > 0.005 else "red" if diff < -0.005 else "dim"
    return Text(f"{diff:+.2f}", style=style)


def confusion_table(name: str, matrix: list[list[int]], labels: list[str]) -> Table:
    """Counts and row-normalised percent in each cell; off-diagonal cells shaded by share."""
    pct = row_normalised(matrix)
    table = Table(
        title=f"Confusion matrix — {shown(name)} (rows: true, columns: predicted; count / row %)",
        title_justify="left",
    )
    table.add_column("true \\ pred")
    for lab in labels:
        table.add_column(shown(lab), justify="right")
    table.add_column("total", justify="right")
    for i, lab in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            share = pct[i, j]
            if i == j:
                style = "bold green"
            elif share >= 20:
                style = "bold white on red"
            elif share >= 10:
                style = "black on yellow"
            elif share >= 5:
                style = "yellow"
            else:
                style = "dim"
            cells.append(Text(f"{matrix[i][j]} / {share:.1f}%", style=style))
        table.add_row(shown(lab), *cells, str(sum(matrix[i])))
    return table


def ambiguity_rich(result: dict[str, Any]) -> Table | None:
    amb = result.get("ambiguity")
    if not amb:
        return None
    who = result.get("ambiguity_models", {})
    table = Table(
        title=f"Ambiguity ({shown(result['split'])})",
        caption=(
            f"MCTI: {shown(who.get('multi', 'multi'))} right, "
            f"{shown(who.get('text', 'text'))} wrong\n"
            "MITC: the reverse"
        ),
        title_justify="left",
        caption_justify="left",
        min_width=64,
    )
    table.add_column("class")
    table.add_column("MCTI", justify="right")
    table.add_column("MITC", justify="right")
    for lab in result["labels"]:
        table.add_row(shown(lab), str(amb["mcti"][lab]), str(amb["mitc"][lab]))
    table.add_section()
    table.add_row(
        "total", str(sum(amb["mcti"].values())), str(sum(amb["mitc"].values())), style="bold"
    )
    return table


def print_evaluation(console: Console, result: dict[str, Any], confusion: bool = True) -> None:
    console.print(metrics_table(result))
    if confusion:
        for name, report in result["models"].items():
            console.print(confusion_table(name, report["confusion_matrix"], result["labels"]))
    amb = ambiguity_rich(result)
    if amb is not None:
        console.print(amb)
    print_gap(console, result)  # the protocol-gap diagnostic, when the models carry it


def _epoch_cell(name: str, epoch: int | None) -> str:
    """The chosen epoch; a distilled model at epoch 0 kept its pretrained weights."""
    if epoch is None:
        return ""
    if epoch == 0 and name.startswith("distill"):
        return "0 (pretrained kept)"
    return str(epoch)


def timings_table(timings: dict[str, float], title: str) -> Table:
    """Wall time per step (``core.timing.StepTimer.to_dict``), with each step's share."""
    total = timings.get("total") or sum(v for k, v in timings.items() if k != "total")
    table = Table(title=title, title_justify="left")
    table.add_column("step")
    table.add_column("wall time", justify="right")
    table.add_column("share", justify="right")
    for step, seconds in timings.items():
        if step == "total":
            continue
        share = f"{100 * seconds / total:.0f}%" if total else ""
        table.add_row(shown(step), f"{seconds:.1f} s", share)
    table.add_row("total", f"{total:.1f} s", "", style="bold")
    return table

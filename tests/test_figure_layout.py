"""The figures' layout: titles clear of legends, footnotes inside the figure, whole trial
numbers on the tuning history, curriculum stages visibly shaded, distinct table columns."""

from __future__ import annotations

import pytest

from mrd_cli.cli.tune import trials_table
from mrd_cli.core import figures


def _boxes(fig):
    fig.canvas.draw()  # lay the figure out (constrained layout) before measuring
    renderer = fig.canvas.get_renderer()
    return renderer, fig.bbox


def _row(variant: str, role: str, mean: float) -> dict:
    return {
        "variant": variant,
        "role": role,
        "weighted_f1": {"mean": mean, "std": 0.5, "values": [mean - 0.4, mean + 0.4]},
        "marks": "",
    }


def test_ablation_title_clears_the_legend_and_the_footnote_fits():
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rows = [
        _row(v, r, 60.0) for v in ("MRD", "MRD w/o MIC", "MRD w/o ILC") for r in ("multi", "text")
    ]
    title = "Ablation on iemocap: mean ± std over 5 seeds, dots: seeds"
    note = (
        "Marks: each variant against MRD, MRD against the pretrained model (same model, same "
        "seeds). * p < 0.05, ** p < 0.01, *** p < 0.001 (paired t-test over seeds); † the "
        "paired bootstrap 95% interval over test utterances excludes 0."
    )
    fig = figures.ablation_figure(rows, title, note)
    FigureCanvasAgg(fig)
    renderer, frame = _boxes(fig)
    legend = fig.legends[0].get_window_extent(renderer)
    heading = fig.axes[0].title.get_window_extent(renderer)
    assert not heading.overlaps(legend)
    footnote = fig._supxlabel.get_window_extent(renderer)
    for box in (heading, footnote, legend):
        assert box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1, (box, frame)
        assert box.y0 >= frame.y0 - 1 and box.y1 <= frame.y1 + 1, (box, frame)


def test_tuning_history_ticks_whole_trial_numbers():
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    trials = [
        {"number": n, "state": "complete", "value": 50.0 + n, "best_intermediate": None}
        for n in range(3)
    ]
    fig = figures.tuning_figure(trials, 49.0, "t", "text")
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if -0.5 <= t <= 2.5]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_the_lightest_curriculum_stage_is_visibly_grey():
    simple = figures.relative_luminance(figures.STAGE_SHADE["simple"])
    assert simple <= 0.8  # #F7F7F7 (0.93) was hardly distinguishable from white
    shades = sorted(figures.relative_luminance(c) for c in figures.STAGE_SHADE.values())
    assert all(b - a >= 0.04 for a, b in zip(shades, shades[1:])), shades


def test_tune_summary_columns_are_distinct():
    row = {
        "number": 0,
        "state": "complete",
        "value": 55.0,
        "best_intermediate": None,
        "epochs_run": 7,
        "epochs_planned": 12,
        "params": {"distill.epochs": 12, "distill.alpha": 0.5},
    }
    summary = {
        "trials": [row],
        "counts": {"complete": 1, "pruned": 0, "fail": 0},
        "study": "s",
        "dataset": "d",
        "target": "text",
        "seeds": 1,
        "best": {"number": 0},
    }
    headers = [c.header for c in trials_table(summary, 10).columns]
    assert len(headers) == len(set(headers)), headers
    assert "epochs run" in headers and "distill.epochs" in headers and "alpha" in headers

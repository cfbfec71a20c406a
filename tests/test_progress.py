"""Progress output: readable at 80 columns on a terminal, plain ordered lines in a log."""

from __future__ import annotations

import io
import re

from rich.console import Console
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.cli.progress import EpochBars, epoch_bars, fit_terms, make_progress
from mrd_cli.core.training import EpochLog

LOSSES = {
    "total": 1.23456,
    "ce": 0.91234,
    "kd_m": 0.12345,
    "kd_t": 0.23456,
    "ref_m": 0.34567,
    "ref_t": 0.45678,
    "reg": 0.01234,
}


def _log(epoch: int, epochs: int = 25, roles: tuple[str, ...] = ("multi", "text")) -> EpochLog:
    val = {r: 40.0 + epoch + i for i, r in enumerate(roles)}
    return EpochLog(epoch, epochs, dict(LOSSES), val, {r: v + 1 for r, v in val.items()})


def test_off_a_terminal_each_epoch_is_one_plain_line_naming_step_role_and_fold():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    with epoch_bars(console) as bars:
        assert bars.plain
        bars.add("distill", "distill", 12)
        for epoch in (1, 2):
            bars.update("fold 2/5 text", _log(epoch, 25, ("text",)))
        bars.update("multi", _log(1, 25, ("multi",)))
        bars.update("distill", _log(1, 12))
        bars.add("cells", "ablation cells", 6)
        bars.advance("cells", 1, "MRD, seed 0 (done)")
    lines = out.getvalue().splitlines()
    pattern = re.compile(
        r"^(?P<what>.+?): (epoch )?(?P<count>\d+/\d+) \(\d+:\d\d elapsed\)(: (?P<rest>.*))?$"
    )
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["what"], m["count"]) for m in parsed] == [
        ("partition fold 2/5 text", "1/25"),
        ("partition fold 2/5 text", "2/25"),
        ("pretrain multi", "1/25"),
        ("distill", "1/12"),
        ("ablation cells", "1/6"),
    ]
    # Whole, not cut, whatever the console's width: every loss term and score is there.
    assert lines[3].startswith("distill: epoch 1/12 (")
    assert "val W-F1[multi]=41.00 (best 42.00), val W-F1[text]=42.00" in lines[3]
    assert all(f"{k}={v:.3f}" in lines[3] for k, v in LOSSES.items())
    assert lines[4].endswith(": MRD, seed 0 (done)")


def _rendered(width: int, descriptions: list[str]) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    progress = make_progress(console)
    bars = EpochBars(progress, console)
    for d in descriptions:
        bars.add(d, d, 25)
    for d in descriptions:
        bars.update(d, _log(3))
    console.print(progress.make_tasks_table(progress.tasks))
    return [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]


def test_at_80_columns_the_counter_and_time_left_come_first_and_no_term_is_cut():
    lines = _rendered(80, ["pretrain multi", "partition fold 2/5 text"])
    assert len(lines) == 2
    for line in lines:
        assert len(line) <= 80
        # The epoch counter and the time left right after the description.
        assert re.search(r"(multi|text)\s+3/25\s+(\d+:\d\d:\d\d|-:--:--)\s", line), line
        # Terms are whole: the first score with its best, each loss with three decimals.
        assert re.search(r"val W-F1\[multi\]=\d+\.\d\d \(best \d+\.\d\d\)", line), line
        for _, value in re.findall(r"(\w+)=(\S*)", line):
            assert re.fullmatch(r"\d+\.\d{2,3}", value), line
        assert line.count("(") == line.count(")")
    # At 80 columns not every term fits: the loss terms go first, the scores stay.
    assert "reg=" not in lines[0]


def test_a_wide_terminal_shows_every_term():
    lines = _rendered(220, ["distill"])
    assert all(f"{k}={v:.3f}" in lines[0] for k, v in LOSSES.items())


def test_fit_terms_keeps_whole_terms_in_order():
    assert fit_terms(["ab", "cd", "ef"], 6) == "ab, cd"
    assert fit_terms(["abcdef", "g"], 5) == ""
    assert fit_terms([], 10) == ""


def test_a_training_command_in_a_log_prints_every_epoch_in_order(tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "pretrain",
            "--modality",
            "text",
            "--run-dir",
            str(tmp_path),
            "--device",
            "cpu",
            "model.hidden=8",
            "pretrain.epochs=3",
            "pretrain.patience=0",
        ],
    )
    assert res.exit_code == 0, res.output
    epochs = re.findall(r"^pretrain text: epoch (\d+)/3 ", res.stderr, re.M)
    assert epochs == ["1", "2", "3"]

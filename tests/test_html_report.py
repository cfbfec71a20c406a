"""`mrd report --html`: one self-contained page per run directory, rendered by a real
browser (headless Chromium) without console errors and not blank."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.core.card import card_path
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import Session
from mrd_cli.io import file_sha256
from mrd_cli.recipes.distill import distill
from mrd_cli.recipes.evaluate import evaluate
from mrd_cli.recipes.partition import partition
from mrd_cli.recipes.pretrain import pretrain
from tests.conftest import make_toy_corpus
from tests.test_cards import _cfg

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("html-run")
    session = Session(_cfg(), make_toy_corpus(), RunDir(root), torch.device("cpu"))
    pretrain(session)
    partition(session)
    distill(session)
    evaluate(session)
    return root


def _page(run_dir: Path) -> tuple[Path, str]:
    result = runner.invoke(app, ["report", str(run_dir), "--html", "--json"])
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.stdout)["html"])
    return path, path.read_text(encoding="utf-8")


def test_the_page_holds_tables_figures_and_cards_and_nothing_from_elsewhere(run_dir):
    pytest.importorskip("matplotlib", reason="the plots extra draws the figures")
    path, page = _page(run_dir)
    assert path == run_dir / "report" / "report.html"
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert page.count("data:image/png;base64,") >= 4  # confusion x4, curves, partition
    assert "Per-class F1" in page or "W-F1" in page
    for name, ckpt in RunDir(run_dir).checkpoints().items():
        assert name in page and file_sha256(ckpt) in page
        assert card_path(ckpt).is_file()
    assert not (run_dir / "plots").exists()  # figures live in the page only


def _chromium() -> str | None:
    return next(
        (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
    )


def _render(browser: str, page: Path, tmp_path: Path) -> tuple[Path, str]:
    shot = tmp_path / f"{page.stem}.png"
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert shot.is_file(), proc.stderr[-2000:]
    return shot, proc.stderr


def _console_errors(stderr: str) -> list[str]:
    """The page's console messages Chromium logged (``CONSOLE`` lines) at warning or error
    level, and failed loads."""
    return [
        line
        for line in stderr.splitlines()
        if ("CONSOLE" in line and ("ERROR" in line or "WARNING" in line))
        or "net::ERR_" in line
        or "Uncaught" in line
    ]


@pytest.mark.slow  # two browser starts
def test_chromium_renders_it_without_console_errors_and_not_blank(run_dir, tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot", reason="the plots extra reads the PNG")
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium: install the Debian package chromium (.ci/run does)")
    # The check can fail: a page with a script error and a missing image is caught.
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png">'
        "<script>console.error('broken on purpose'); undefinedCall();</script></body></html>"
    )
    _, noisy = _render(browser, broken, tmp_path)
    assert _console_errors(noisy), noisy[-2000:]

    path, _ = _page(run_dir)
    shot, stderr = _render(browser, path, tmp_path)
    assert _console_errors(stderr) == []
    pixels = plt.imread(shot)[..., :3]
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert pixels.std() > 0.05 and len(colours) > 50  # text, tables and figures, not blank
    shutil.copy(shot, run_dir / "report" / "screenshot.png")  # to look at

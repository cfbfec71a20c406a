"""Recipe: one self-contained HTML page of a run directory (`mrd report --html`).

The page holds what `mrd report` tabulates (the paper tables), the figures of `mrd plot`
(drawn in memory and inlined as base64 PNG, so nothing is written to ``RUN/plots``), each
checkpoint's model card, and the per-epoch records. No script, no style sheet or font from
elsewhere, no request to any server: the file opens from disk in any browser. Every text
that comes from a file is HTML-escaped. Written to ``RUN/report/report.html``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mrd_cli.core.card import card_fields, card_path, read_card_fields
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.tables import PaperTable
from mrd_cli.core.tracking import metrics_path, read_metrics
from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_text

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #1a1a1a; background: #fff; line-height: 1.45; }
h1 { border-bottom: 3px solid #2b6cb0; padding-bottom: .3rem; }
h2 { color: #2b6cb0; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .8rem 0 1.2rem; font-size: .92rem; }
th, td { border: 1px solid #c8d1dc; padding: .25rem .6rem; }
th { background: #e8eef6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3rem 0; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; border: 1px solid #dde3ea; }
figcaption { color: #555; font-size: .9rem; }
.card { border: 1px solid #c8d1dc; border-radius: 6px; padding: .4rem 1rem 1rem;
        margin: 1rem 0; background: #fafcff; }
.muted { color: #666; }
pre { background: #f3f5f8; padding: .6rem; overflow-x: auto; font-size: .82rem; }
"""


def html_report(run_dir: Path, split: str = "test") -> Path:
    """Write ``RUN/report/report.html``; return its path."""
    from mrd_cli.recipes.report import build_tables

    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise MRDError(
            f"Run directory {run.root} does not exist. Pass the directory a run wrote (its "
            "--run-dir)."
        )
    tables, skipped = build_tables(run, split)
    figures, figures_note = _figures(run, split)
    cards = _cards(run)
    if not tables and not figures and not cards:
        raise MRDError(f"Nothing to report in {run.root}: no results, figures or checkpoints.")
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>mrd report: {e(run.root.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>mrd report: {e(run.root.name)}</h1>",
        f'<p class="muted">Run directory <code>{e(str(run.root))}</code>; {split} split; '
        f"made {datetime.now(timezone.utc).isoformat(timespec='seconds')}.</p>",
        "<h2>Tables</h2>",
    ]
    parts += [_table_html(t) for t in tables] or ['<p class="muted">No tables.</p>']
    if skipped:
        parts.append('<ul class="muted">')
        parts += [f"<li>{e(name)}: {e(why)}</li>" for name, why in skipped.items()]
        parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    if figures_note:
        parts.append(f'<p class="muted">{e(figures_note)}</p>')
    for name, (png, title) in figures.items():
        parts.append(
            f'<figure><img alt="{e(name)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{e(title)}</figcaption></figure>"
        )
    parts.append("<h2>Model cards</h2>")
    parts += [_card_html(name, card, run) for name, card in cards.items()] or [
        '<p class="muted">No checkpoints.</p>'
    ]
    parts.append("</body></html>\n")
    target = run.report / "report.html"
    atomic_write_text(target, "\n".join(parts))
    return target


def _table_html(t: PaperTable) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = []
    for i, row in enumerate(t.rows):
        cells = "".join(
            f'<td class="num">{e(c)}</td>' if a == "r" else f"<td>{e(c)}</td>"
            for c, a in zip(row, t.align, strict=True)
        )
        rule = ' style="border-top: 2px solid #888"' if i in t.rules else ""
        body.append(f"<tr{rule}>{cells}</tr>")
    return (
        f"<table><caption>{e(t.caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _figures(run: RunDir, split: str) -> tuple[dict[str, tuple[str, str]], str]:
    """name -> (base64 PNG, caption) of each figure `mrd plot` would draw, and a note on
    the ones missing (matplotlib absent, or no results for them)."""
    try:
        from mrd_cli.core import figures as figs

        matplotlib = figs.require_matplotlib()
    except MRDError as exc:
        return {}, f"No figures: {exc}"
    from mrd_cli.recipes.plot import _figures as plot_figures

    out: dict[str, tuple[str, str]] = {}
    missing = []
    for name, draw in plot_figures(run, split):
        fig = draw if isinstance(draw, str) else _draw(draw)
        if isinstance(fig, str):
            missing.append(f"{name} ({fig})")
            continue
        buffer = io.BytesIO()
        with matplotlib.rc_context(figs.RC):
            fig.savefig(
                buffer, format="png", dpi=110, metadata={"Software": None}, facecolor="white"
            )
        title = fig.get_suptitle() if hasattr(fig, "get_suptitle") else name
        out[name] = (base64.b64encode(buffer.getvalue()).decode("ascii"), title or name)
    return out, ("Not drawn: " + "; ".join(missing) + ".") if missing else ""


def _draw(draw: Any) -> Any:
    try:
        return draw()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        return f"its results file is malformed ({type(exc).__name__})"


def _cards(run: RunDir) -> dict[str, dict[str, Any]]:
    """Each checkpoint's card fields (rebuilt from the checkpoint when the card is missing
    or describes another file)."""
    from mrd_cli.core.checkpoint import load_checkpoint
    from mrd_cli.io import file_sha256

    out = {}
    for name, path in run.checkpoints().items():
        card = read_card_fields(card_path(path))
        if card is None or card.get("checkpoint_sha256") != file_sha256(path):
            try:
                card = card_fields(load_checkpoint(path), path)
            except MRDError as exc:
                card = {"error": str(exc)}
        out[name] = card
    return out


def _card_html(name: str, card: dict[str, Any], run: RunDir) -> str:
    e = html.escape
    if "error" in card:
        return f'<div class="card"><h3>{e(name)}</h3><p>{e(card["error"])}</p></div>'
    sel, data = card["selection"], card["data"]
    rows = [
        ("checkpoint", f"{card['checkpoint']} (sha256 {card['checkpoint_sha256']})"),
        ("backbone / modalities", f"{card['backbone']} / {', '.join(card['modalities'] or [])}"),
        ("data", f"{data['dataset']}, fingerprint {data['fingerprint']}"),
        (
            "splits",
            ", ".join(
                f"{s} {v['dialogues']} dialogues / {v['utterances']} utterances"
                for s, v in (data.get("splits") or {}).items()
            ),
        ),
        ("selection", f"{sel['rule']}; validation: {sel['validation_split']}"),
        ("chosen epoch", str(sel["chosen_epoch"])),
        ("training", (sel.get("stopping") or {}).get("stop_reason", "")),
        ("start guard", json.dumps(sel.get("start_guard")) if sel.get("start_guard") else "—"),
        ("seed", str(card["seed"])),
        ("mrd", f"{card['mrd_version']}, git {card['git_commit'] or 'unknown'}"),
        ("parents", "; ".join(f"{p['what']}: {p['path']}" for p in card["parents"]) or "none"),
    ]
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    val, test = card.get("validation_metrics") or {}, card.get("test_metrics") or {}
    metric_rows = [("W-F1", "weighted_f1"), ("Accuracy", "accuracy"), ("Macro F1", "macro_f1")]

    def cell(m: dict[str, Any], key: str) -> str:
        return f"{m[key]:.2f}" if key in m else "—"

    metrics = "".join(
        f'<tr><th>{label}</th><td class="num">{cell(val, k)}</td>'
        f'<td class="num">{cell(test, k)}</td></tr>'
        for label, k in metric_rows
    )
    epochs = read_metrics(metrics_path(run.root / name.split("/")[0], name.split("/")[1]))
    epoch_note = f"{len(epochs)} epoch records in {name}.metrics.jsonl" if epochs else ""
    return (
        f'<div class="card"><h3>{e(name)}</h3><table>{facts}</table>'
        f"<table><caption>Metrics (percent)</caption><tr><th></th><th>validation</th>"
        f"<th>test</th></tr>{metrics}</table>"
        f'<p class="muted">{e(epoch_note)}</p></div>'
    )

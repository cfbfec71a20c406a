"""Figures of results, drawn with matplotlib (the optional ``plots`` extra).

Each function takes plain data and returns a matplotlib ``Figure``; ``save_figure`` writes
it as PNG and SVG. The figures are made without pyplot, on ``Figure`` objects of their own,
so that no window system and no global backend setting is involved (headless everywhere).
matplotlib is imported inside the functions: the package works without it.

Colours survive greyscale printing: the two models are a dark and a light colour of Paul
Tol's high-contrast scheme (colour-blind safe), the partition groups four colours of
distinct luminance, and every series also differs by marker, line style or hatching.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

from mrd_cli.errors import MRDError
from mrd_cli.io import atomic_write_bytes

INSTALL_HINT = "pip install -e '.[plots]'"
FORMATS = ("png", "svg")
DPI = 110

# The multimodal and the text model: colour, marker, line style, hatch.
ROLE_STYLE = {
    "multi": {"color": "#004488", "marker": "o", "linestyle": "-", "hatch": ""},
    "text": {"color": "#DDAA33", "marker": "s", "linestyle": "--", "hatch": "//"},
}
ROLE_LABEL = {"multi": "multimodal model", "text": "text model"}
# The partition groups (core/partition.py: GROUPS), darkest first.
GROUP_STYLE = {
    "mcti": {"color": "#004488", "hatch": ""},
    "mitc": {"color": "#BB5566", "hatch": "//"},
    "general": {"color": "#DDAA33", "hatch": ".."},
    "simple": {"color": "#EEEEEE", "hatch": "xx"},
}
GROUP_LABEL = {
    "mcti": "Difficult_1 (MCTI: multi right, text wrong)",
    "mitc": "Difficult_2 (MITC: text right, multi wrong)",
    "general": "General (both wrong)",
    "simple": "Simple (both right)",
}
# Background of the curriculum stages in the distillation panel (greys of distinct shade).
# "simple", the lightest, stays visibly grey on white paper and screens.
STAGE_SHADE = {"difficult": "#A8A8A8", "general": "#C4C4C4", "simple": "#DEDEDE", "all": "#D2D2D2"}
RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "hatch.linewidth": 0.8,
    "svg.hashsalt": "mrd",  # stable element ids (clip paths may still differ between runs)
    "svg.fonttype": "none",  # text stays text in the SVG (searchable, editable)
}


def relative_luminance(hex_colour: str) -> float:
    """WCAG relative luminance of ``#RRGGBB`` (0 black, 1 white): what greyscale keeps."""
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def require_matplotlib() -> Any:
    """The matplotlib module, or a user error naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise MRDError(f"mrd plot needs matplotlib, an optional extra: {INSTALL_HINT}") from None
    return matplotlib


def new_figure(width: float, height: float, ncols: int = 1, **subplot_kw: Any) -> tuple[Any, Any]:
    """A headless ``Figure`` (constrained layout: nothing clipped) and its axes."""
    matplotlib = require_matplotlib()
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained", dpi=DPI)
        axes = fig.subplots(1, ncols, squeeze=False, **subplot_kw)[0]
    return fig, axes


def save_figure(fig: Any, stem: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format, atomically; the paths written."""
    matplotlib = require_matplotlib()
    written = []
    for fmt in formats:
        buffer = io.BytesIO()
        # No creation date or software version in the files.
        metadata = {
            "png": {"Software": None},
            "svg": {"Date": None},
            "pdf": {"CreationDate": None},
        }.get(fmt, {})
        with matplotlib.rc_context(RC):
            fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata, facecolor="white")
        path = stem.with_suffix(f".{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def _with_rc(func):
    """Draw under the figures' style (font sizes, hatch width) without touching the
    process-wide settings."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        matplotlib = require_matplotlib()
        with matplotlib.rc_context(RC):
            return func(*args, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


# --------------------------------------------------------------------------------------
# The figures


@_with_rc
def confusion_figure(matrix: list[list[int]], labels: list[str], title: str) -> Any:
    """Two panels: the confusion matrix in counts and in row percent (rows true class,
    columns predicted), each cell printed; one sequential colour scale (greyscale safe)."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(1, keepdims=True)
    pct = np.divide(100 * counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(3.2, 0.55 * len(labels) + 1.2)
    fig, axes = new_figure(2 * size + 0.8, size + 0.5, ncols=2)
    panels = (
        (axes[0], counts, "counts", "{:.0f}", counts.max() or 1.0),
        (axes[1], pct, "row %", "{:.0f}", 100.0),
    )
    for ax, values, name, fmt, top in panels:
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=top)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(name)
        for i in range(len(labels)):
            for j in range(len(labels)):
                dark = values[i, j] > 0.55 * top
                ax.text(
                    j,
                    i,
                    fmt.format(values[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8 if len(labels) > 6 else 9,
                    color="white" if dark else "black",
                )
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(title)
    return fig


@_with_rc
def training_figure(
    panels: list[dict[str, Any]],
    title: str,
    role_labels: dict[str, str] | None = None,
) -> Any:
    """Validation W-F1 per epoch, one panel per training stage (the models named by
    ``role_labels``, default ``ROLE_LABEL``).

    Each panel: ``title``, ``curves`` (role -> list of (epoch, W-F1)), ``selected`` (role ->
    the epoch chosen, marked with a star), optionally ``rejected`` (role -> the best
    distillation epoch the start guard rejected, marked with a cross) and ``stages`` (the curriculum's
    (name, epochs) in order, shaded in the background; epoch 0 is the pretrained start).
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    fig, axes = new_figure(5.2 * len(panels), 4.3, ncols=len(panels))
    handles: dict[str, Any] = {}
    for ax, panel in zip(axes, panels):
        start = 0
        for name, epochs in panel.get("stages") or []:
            shade = STAGE_SHADE.get(name, "#EEEEEE")
            ax.axvspan(start + 0.5, start + epochs + 0.5, color=shade, zorder=0, lw=0)
            handles[f"stage: {name}"] = Patch(
                facecolor=shade, edgecolor="#777777", label=f"curriculum stage: {name}"
            )
            start += epochs
        for role, points in panel["curves"].items():
            style = ROLE_STYLE[role]
            xs = [e for e, _ in points]
            ys = [v for _, v in points]
            (line,) = ax.plot(
                xs,
                ys,
                color=style["color"],
                marker=style["marker"],
                linestyle=style["linestyle"],
                markersize=4,
                label=(role_labels or ROLE_LABEL)[role],
                zorder=3,
            )
            handles.setdefault(role, line)
            # The epoch kept (a star) and a best epoch the start guard refused (a cross).
            for key, marker, size, legend_size, label in (
                ("selected", "*", 14, 11, "epoch chosen on validation"),
                ("rejected", "X", 11, 9, "best epoch, rejected by the start guard"),
            ):
                epoch = panel.get(key, {}).get(role)
                if epoch is None or epoch not in xs:
                    continue
                ax.plot(
                    [epoch],
                    [ys[xs.index(epoch)]],
                    marker=marker,
                    markersize=size,
                    color=style["color"],
                    markeredgecolor="black",
                    linestyle="none",
                    zorder=4,
                )
                handles.setdefault(
                    key,
                    Line2D(
                        [],
                        [],
                        marker=marker,
                        color="#999999",
                        markeredgecolor="black",
                        markersize=legend_size,
                        linestyle="none",
                        label=label,
                    ),
                )
        ax.set_title(panel["title"])
        starts = any(e == 0 for pts in panel["curves"].values() for e, _ in pts)
        ax.set_xlabel("epoch" + (" (0: the pretrained weights)" if starts else ""))
        ax.set_ylabel("validation W-F1 (%)")
        ax.grid(axis="y", color="#CCCCCC", linewidth=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        first = min((e for pts in panel["curves"].values() for e, _ in pts), default=0)
        last = max((e for pts in panel["curves"].values() for e, _ in pts), default=1)
        ax.set_xlim(first - 0.5, last + 0.5)
    # One legend for all panels, below them: it never hides a curve.
    order = [k for k in ("multi", "text", "selected", "rejected") if k in handles]
    order += [k for k in handles if k.startswith("stage: ")]
    fig.legend(
        handles=[handles[k] for k in order],
        loc="outside lower center",
        ncols=min(len(order), 3),
        frameon=False,
    )
    fig.suptitle(title)
    return fig


@_with_rc
def partition_figure(counts: dict[str, dict[str, int]], labels: list[str], title: str) -> Any:
    """Grouped bars: utterances of each partition group per class."""
    import numpy as np

    groups = list(counts)
    x = np.arange(len(labels))
    width = 0.8 / len(groups)
    fig, axes = new_figure(max(6.0, 1.1 * len(labels) + 2.5), 4.0)
    ax = axes[0]
    for k, group in enumerate(groups):
        style = GROUP_STYLE[group]
        ax.bar(
            x + (k - (len(groups) - 1) / 2) * width,
            [counts[group][lab] for lab in labels],
            width,
            color=style["color"],
            hatch=style["hatch"],
            edgecolor="black",
            linewidth=0.6,
            label=GROUP_LABEL[group],
        )
    ax.set_xticks(x, labels)
    ax.set_xlabel("class")
    ax.set_ylabel("training utterances")
    ax.grid(axis="y", color="#CCCCCC", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    ax.set_title(title)
    return fig


@_with_rc
def ablation_figure(
    rows: list[dict[str, Any]],
    title: str,
    note: str = "",
    role_labels: dict[str, str] | None = None,
) -> Any:
    """Bars of mean W-F1 per variant and model with ± std error bars, each seed's value as
    a dot, and the significance marks of each difference above its bar (``marks``);
    ``note`` (what the marks mean) is printed under the plot; the models are named by
    ``role_labels`` (default ``ROLE_LABEL``)."""
    import numpy as np

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    roles = [role for role in ROLE_STYLE if any(r["role"] == role for r in rows)]
    by = {(r["variant"], r["role"]): r for r in rows}
    x = np.arange(len(variants))
    width = 0.8 / len(roles)
    fig, axes = new_figure(max(6.4, 1.3 * len(variants) + 2.0), 4.6 if note else 4.2)
    ax = axes[0]
    lows, highs = [], []
    for k, role in enumerate(roles):
        style = ROLE_STYLE[role]
        offset = (k - (len(roles) - 1) / 2) * width
        for i, variant in enumerate(variants):
            row = by.get((variant, role))
            if row is None:
                continue
            w = row["weighted_f1"]
            ax.bar(
                x[i] + offset,
                w["mean"],
                width,
                yerr=w["std"],
                capsize=3,
                color=style["color"],
                hatch=style["hatch"],
                edgecolor="black",
                linewidth=0.6,
                label=(role_labels or ROLE_LABEL)[role] if i == 0 else None,
                zorder=2,
            )
            values = w.get("values") or [w["mean"]]
            ax.plot(
                [x[i] + offset] * len(values),
                values,
                linestyle="none",
                marker="o",
                markersize=3.5,
                markerfacecolor="white",
                markeredgecolor="black",
                zorder=3,
            )
            top = max([w["mean"] + w["std"], *values])
            lows.append(min([w["mean"] - w["std"], *values]))
            highs.append(top)
            if row.get("marks"):
                ax.annotate(
                    row["marks"],
                    (x[i] + offset, top),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=10,
                    fontweight="bold",
                )
    # The bars start below the lowest value, not at 0: the differences are a few points.
    span = max(highs) - min(lows) if highs else 1.0
    bottom = max(0.0, min(lows) - 0.6 * span - 1.0)
    ax.set_ylim(bottom, max(highs) + 0.35 * span + 1.0)
    ax.set_xticks(x, [v[:1].upper() + v[1:] for v in variants], rotation=15, ha="right")
    ax.set_ylabel("test W-F1 (%)" + ("  (axis starts above 0)" if bottom > 0 else ""))
    if note:  # as the figure's x label, which the constrained layout makes room for
        fig.supxlabel(wrap_to_figure(note, fig, 8), fontsize=8, x=0.01, ha="left")
    ax.grid(axis="y", color="#CCCCCC", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.legend(loc="outside right upper", frameon=False)
    # The title wrapped to the width the legend leaves the plot, so that it never runs
    # under the legend: lay the figure out once to know that width.
    fig.draw_without_rendering()
    width_pt = ax.get_position().width * fig.get_figwidth() * 72
    ax.set_title(textwrap.fill(title, max(20, int(0.95 * width_pt / (0.6 * 11)))))
    return fig


def wrap_to_figure(text: str, fig: Any, fontsize: float) -> str:
    """``text`` wrapped to lines that fit the figure's width at ``fontsize`` points (an
    average character being taken as 0.6 em wide, with a margin)."""
    width_pt = fig.get_figwidth() * 72
    return textwrap.fill(text, max(20, int(0.9 * width_pt / (0.6 * fontsize))))


@_with_rc
def tuning_figure(
    trials: list[dict[str, Any]], pretrained_value: float | None, title: str, target: str
) -> Any:
    """The study's history: each finished trial's value by trial number (pruned trials at
    their best reported value), the best value so far, and the pretrained model's value."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = new_figure(6.4, 4.4)
    ax = axes[0]
    done = sorted(
        (t for t in trials if t["state"] in ("complete", "pruned")), key=lambda t: t["number"]
    )
    complete = [(t["number"], t["value"]) for t in done if t["state"] == "complete"]
    pruned = [
        (t["number"], t["best_intermediate"])
        for t in done
        if t["state"] == "pruned" and t.get("best_intermediate") is not None
    ]
    if complete:
        ax.plot(
            *zip(*complete), linestyle="none", marker="o", color="#004488", label="complete trial"
        )
        best, steps = float("-inf"), []
        for number, value in complete:
            best = max(best, value)
            steps.append((number, best))
        ax.step(*zip(*steps), where="post", color="black", linewidth=1.4, label="best so far")
    if pruned:
        ax.plot(
            *zip(*pruned),
            linestyle="none",
            marker="x",
            color="#BB5566",
            markersize=7,
            label="pruned trial (best epoch)",
        )
    if pretrained_value is not None:
        ax.axhline(
            pretrained_value,
            color="#777777",
            linestyle=":",
            linewidth=1.4,
            label="pretrained model",
        )
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are whole numbers
    ax.set_ylabel(f"validation W-F1 of {target} (%)")
    ax.grid(axis="y", color="#CCCCCC", linewidth=0.6)
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    ax.set_title(title)
    return fig

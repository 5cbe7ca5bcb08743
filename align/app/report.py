"""Report building blocks: Markdown tables, mean ± std formatting and the plots of demos and experiments.

Plots are drawn with matplotlib's object API (``matplotlib.figure.Figure`` + the Agg canvas), never through
``pyplot``, so writing a report neither opens a window nor changes the caller's global backend. Every plotting
function writes one PNG atomically and returns its path.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "fmt_mean_std",
    "markdown_table",
    "mean_std",
    "plot_against_null",
    "plot_bars",
    "plot_curves",
    "plot_heatmap",
    "plot_image_panel",
]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value), accumulated in float64."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt_mean_std(mean: float, std: float | None = None, digits: int = 3) -> str:
    """``"0.412 ± 0.031"`` (or just the mean when ``std`` is None)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats get three decimals, ``|`` in cells is escaped."""
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"every row must have {len(headers)} cells, got {len(row)}: {row!r}")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    log.info("wrote %s", path)
    return path


def plot_heatmap(
    matrices: Mapping[str, np.ndarray],
    labels_y: Sequence[str],
    labels_x: Sequence[str],
    path: str | os.PathLike,
    *,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """One annotated heatmap per entry of ``matrices`` (``{title: (len(labels_y), len(labels_x)) array}``), side by side.

    Used for encoder × encoder similarity (one panel per metric) and layer × layer sweeps.
    """
    n = len(matrices)
    if n == 0:
        raise ValueError("`matrices` is empty; nothing to plot")
    cols = [np.asarray(m, dtype=np.float64) for m in matrices.values()]
    for title, M in zip(matrices, cols):
        if M.shape != (len(labels_y), len(labels_x)):
            raise ValueError(f"matrix {title!r} has shape {M.shape}, expected ({len(labels_y)}, {len(labels_x)})")
    w = max(3.2, 0.9 * len(labels_x) + 1.8)
    h = max(2.8, 0.7 * len(labels_y) + 1.4)
    fig = _figure(w * n, h)
    for i, (title, M) in enumerate(zip(matrices, cols)):
        ax = fig.add_subplot(1, n, i + 1)
        im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_xticks(range(len(labels_x)), labels=list(labels_x), rotation=30, ha="right")
        ax.set_yticks(range(len(labels_y)), labels=list(labels_y))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        lo = vmin if vmin is not None else np.nanmin(M)
        hi = vmax if vmax is not None else np.nanmax(M)
        mid = 0.5 * (lo + hi)
        if M.size <= 144:
            for (r, c), v in np.ndenumerate(M):
                if np.isfinite(v):
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if v > mid else "white")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_against_null(
    panels: Mapping[str, Sequence[tuple[str, float, float, float]]],
    path: str | os.PathLike,
    *,
    xlabel: str = "value",
    null_label: str = "permutation null",
    xlim: tuple[float, float] | None = (0.0, 1.0),
) -> Path:
    """Each pair's value against its permutation null: ``{panel title: [(pair label, value, null mean, null std), …]}``.

    One horizontal bar per pair: grey from 0 to the null mean (what re-paired rows score, with a ±2 std whisker),
    coloured from there to the value, so what the figure shows at a glance is the value minus the null (a CKA of 0.6
    means little when re-paired rows score 0.5). Each row is labelled ``value, null mean (z)`` to the right.
    """
    from matplotlib.transforms import blended_transform_factory

    n = len(panels)
    if n == 0:
        raise ValueError("`panels` is empty; nothing to plot")
    rows = max(len(v) for v in panels.values())
    ncols = min(n, 2)
    nrows = -(-n // ncols)
    fig = _figure(6.4 * ncols, (0.5 * rows + 1.5) * nrows)
    for i, (title, pairs) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        right = blended_transform_factory(ax.transAxes, ax.transData)
        ys = np.arange(len(pairs))[::-1]
        for y, (label, value, mu, sd) in zip(ys, pairs):
            ax.barh(y, value, height=0.6, color="tab:blue", label="value above the null" if y == ys[0] else None)
            ax.barh(y, min(mu, value), height=0.6, color="0.6", label=null_label + " (mean, ± 2 std)"
                    if y == ys[0] else None)
            ax.errorbar(mu, y, xerr=2 * sd, color="black", capsize=3, linewidth=1.2)
            z = (value - mu) / sd if sd > 0 else float("inf")
            ax.text(1.02, y, f"{value:.2f}, null {mu:.2f} (z = {z:.0f})", transform=right, va="center", fontsize=8)
        ax.set_yticks(ys, labels=[p[0] for p in pairs], fontsize=8)
        if xlim is not None:
            ax.set_xlim(*xlim)
        ax.set_ylim(-0.6, len(pairs) - 0.4)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    return _save(fig, path)


def plot_curves(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float] | None]]],
    path: str | os.PathLike,
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    ylim: tuple[float, float] | None = None,
    reference: Mapping[str, float] | None = None,
) -> Path:
    """Line plots with ± std bands: ``{panel title: {series label: (x, mean, std or None)}}``, one axis per panel.

    ``reference`` draws labelled horizontal lines (e.g. ``{"chance": 0.01}``) on every panel.
    """
    n = len(panels)
    if n == 0:
        raise ValueError("`panels` is empty; nothing to plot")
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = _figure(4.2 * ncols, 3.3 * nrows)
    for i, (title, series) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for label, (x, mean, std) in series.items():
            x = np.asarray(x, dtype=np.float64)
            mean = np.asarray(mean, dtype=np.float64)
            line, = ax.plot(x, mean, marker="o", markersize=3, label=label)
            if std is not None:
                std = np.asarray(std, dtype=np.float64)
                ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color())
        for name, value in (reference or {}).items():
            ax.axhline(value, color="black", linestyle=":", linewidth=1.4, label=name)
        if logx:
            ax.set_xscale("log")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_bars(
    groups: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    *,
    ylabel: str,
    reference: Mapping[str, float] | None = None,
    chance: Mapping[str, float] | None = None,
) -> Path:
    """Grouped bars: ``{group: {bar label: value}}`` (e.g. ``{"top-1": {"procrustes": 0.2, …}, "top-5": …}``).

    ``reference`` draws labelled horizontal lines across the whole plot; ``chance`` (``{group: value}``) a dotted
    line over each group's bars at that group's own chance level, its value under the group's name.
    """
    if not groups:
        raise ValueError("`groups` is empty; nothing to plot")
    labels = list(dict.fromkeys(k for g in groups.values() for k in g))
    fig = _figure(max(4.0, 1.2 * len(groups) * len(labels) * 0.5 + 2), 3.3)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(groups))]
        vals = [g.get(label, np.nan) for g in groups.values()]
        bars = ax.bar(xs, vals, width, label=label)
        for b, v in zip(bars, vals):
            if np.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    for name, value in (reference or {}).items():
        ax.axhline(value, color="black", linestyle=":", linewidth=1.4, label=name)
    ticks, labelled = list(groups), False
    for i, group in enumerate(groups):
        if chance and group in chance:
            c = float(chance[group])
            ax.plot([i - 0.45, i + 0.45], [c, c], color="black", linestyle=":", linewidth=1.6,
                    label=None if labelled else "chance")
            labelled = True
            ticks[i] = f"{group}\n(chance {c:.3f})"
    ax.set_xticks(range(len(groups)), labels=ticks)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_image_panel(
    items: Sequence[tuple[Any, str, Sequence[str]]],
    path: str | os.PathLike,
) -> Path:
    """A row of pictures, each with a title and lines of text under it: ``[(image, title, lines), …]``.

    ``image`` is a path or a PIL image; it is shown downscaled and centred in a 256 × 192 box.
    """
    from PIL import Image

    if not items:
        raise ValueError("`items` is empty; nothing to plot")
    n = len(items)
    n_lines = max(len(lines) for _, _, lines in items)
    text_h = 0.17 * n_lines + 0.1
    fig = _figure(3.4 * n, 2.9 + text_h)
    grid = fig.add_gridspec(2, n, height_ratios=[2.7, text_h])
    for i, (image, title, lines) in enumerate(items):
        ax = fig.add_subplot(grid[0, i])
        im = image if isinstance(image, Image.Image) else Image.open(image)
        im = im.convert("RGB")
        im.thumbnail((256, 192))
        canvas = Image.new("RGB", (256, 192), "white")  # one box for every picture, so the text lines up
        canvas.paste(im, ((256 - im.width) // 2, (192 - im.height) // 2))
        ax.imshow(np.asarray(canvas))
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        tx = fig.add_subplot(grid[1, i])
        tx.set_axis_off()
        tx.text(0.0, 1.0, "\n".join(lines), transform=tx.transAxes, ha="left", va="top", fontsize=7.5,
                family="monospace")
    return _save(fig, path)

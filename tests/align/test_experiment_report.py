"""align.app.report: mean ± std, Markdown tables and the PNG plots."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from align.app.report import (
    fmt_mean_std,
    markdown_table,
    mean_std,
    plot_bars,
    plot_curves,
    plot_heatmap,
    plot_image_panel,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, np.std([1, 2, 3, 4], ddof=1)))
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])
    assert fmt_mean_std(0.41234, 0.0312) == "0.412 ± 0.031"
    assert fmt_mean_std(0.5, None, 2) == "0.50"
    assert fmt_mean_std(float("nan"), 0.1) == "n/a"


def test_markdown_table_escapes_pipes_and_checks_row_length():
    md = markdown_table(["a", "b"], [[1, 0.123456], ["x|y", "two\nlines"]])
    lines = md.splitlines()
    assert lines[0] == "| a | b |" and lines[1] == "|---|---|"
    assert lines[2] == "| 1 | 0.123 |"
    assert lines[3] == "| x\\|y | two lines |"
    with pytest.raises(ValueError, match="2 cells"):
        markdown_table(["a", "b"], [[1]])


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 1000


def test_plots_write_png_files(tmp_path):
    M = np.array([[1.0, 0.3], [0.3, 1.0]])
    assert _is_png(plot_heatmap({"cka": M, "knn": M / 2}, ["a", "b"], ["a", "b"], tmp_path / "h.png"))
    with pytest.raises(ValueError, match="expected"):
        plot_heatmap({"bad": np.ones((3, 2))}, ["a", "b"], ["a", "b"], tmp_path / "bad.png")
    curves = {"x -> y": {"faq": ([10, 30, 100], [0.1, 0.2, 0.4], [0.01, 0.02, 0.03]),
                         "procrustes": ([10, 30, 100], [0.05, 0.1, 0.3], None)}}
    assert _is_png(plot_curves(curves, tmp_path / "c.png", xlabel="seeds", ylabel="acc", logx=True,
                               reference={"chance": 0.01}))
    assert _is_png(plot_bars({"top-1": {"a": 0.2, "b": 0.1}, "top-5": {"a": 0.4}}, tmp_path / "b.png",
                             ylabel="acc", reference={"chance": 0.002}))
    img = Image.fromarray((np.arange(300 * 200 * 3) % 251).astype(np.uint8).reshape(200, 300, 3))
    path = tmp_path / "img.png"
    img.save(path)
    assert _is_png(plot_image_panel([(path, "photo", ["line 1", "line 2"]), (img, "same", ["x"])],
                                    tmp_path / "p.png"))
    for func, args in ((plot_heatmap, ({}, [], [], tmp_path / "e.png")), (plot_curves, ({}, tmp_path / "e.png")),
                       (plot_bars, ({}, tmp_path / "e.png")), (plot_image_panel, ([], tmp_path / "e.png"))):
        with pytest.raises(ValueError, match="empty"):
            func(*args, **({"xlabel": "x", "ylabel": "y"} if func is plot_curves else
                           {"ylabel": "y"} if func is plot_bars else {}))

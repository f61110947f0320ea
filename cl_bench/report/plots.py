"""Leaderboard plots: matplotlib (Agg) to deterministic SVG files.

Three kinds, all from result records:

- ``bar_plot``: a task's primary metric per method, mean ± std over seeds;
- ``curve_plot``: a protocol's curves, read from ``extras["curves"]`` =
  ``{name: {"x": [...], "y": [...], "x_label": str, "y_label": str}}`` (e.g. accuracy vs
  number of shots, views or labels), one line per method (mean over seeds);
- ``group_plot``: per-group scores, read from ``extras["per_group"]`` = ``{name: {group: value}}``
  (e.g. MMVP per-pattern accuracy), grouped bars per method.

Same input, same bytes: no dates in the metadata and a fixed hash salt for element ids.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

_RC = {"svg.hashsalt": "cl_bench", "svg.fonttype": "path", "font.size": 9}


def _plain(text: str) -> str:
    """User text shown literally (no mathtext between dollar signs)."""
    return str(text).replace("$", r"\$")


def _save(fig: plt.Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "cl_bench"})
    plt.close(fig)
    return buf.getvalue()


def bar_plot(labels: Sequence[str], means: Sequence[float], stds: Sequence[float], ylabel: str, title: str) -> str:
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(max(3.0, 0.6 * len(labels) + 1.5), 2.8))
        errs = [0.0 if math.isnan(s) else s for s in stds]
        ax.bar(range(len(labels)), means, yerr=errs, capsize=3, color="#4C72B0")
        ax.set_xticks(range(len(labels)), [_plain(v) for v in labels], rotation=30, ha="right")
        ax.set_ylabel(_plain(ylabel))
        ax.set_title(_plain(title))
        ax.grid(axis="y", alpha=0.3)
        return _save(fig)


def curve_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
               title: str) -> str:
    """``series``: method -> (x, y)."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(4.5, 3.0))
        for name, (x, y) in sorted(series.items()):
            ax.plot(x, y, marker="o", markersize=3, label=_plain(name))
        ax.set_xlabel(_plain(xlabel))
        ax.set_ylabel(_plain(ylabel))
        ax.set_title(_plain(title))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return _save(fig)


def group_plot(values: dict[str, dict[str, float]], ylabel: str, title: str) -> str:
    """``values``: method -> {group: score}; groups on the x axis, one bar per method."""
    groups = sorted({g for v in values.values() for g in v})
    methods = sorted(values)
    width = 0.8 / max(1, len(methods))
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(groups) * max(1, len(methods)) + 1.5), 3.0))
        x = np.arange(len(groups))
        for i, m in enumerate(methods):
            ax.bar(x + i * width, [values[m].get(g, np.nan) for g in groups], width, label=_plain(m))
        ax.set_xticks(x + width * (len(methods) - 1) / 2, [_plain(g) for g in groups], rotation=30, ha="right")
        ax.set_ylabel(_plain(ylabel))
        ax.set_title(_plain(title))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
        return _save(fig)

"""Heatmap PNG of the readiness table: rows model x target, columns stacks (``pivot`` order), one colour per verdict.

matplotlib's object API with the Agg canvas, not pyplot: no global figure registry, no GUI backend to pick, a
cheaper import. The whole grid is one ``pcolormesh`` (one artist, not one patch per cell): drawing 50 x 120 cells
takes milliseconds, and what remains is the labels' glyphs (matplotlib draws them one by one), hence labels as
few and as short as the table allows. The PNG carries no "Software" tag and uses a fixed dpi: the same report
gives the same bytes.
"""

from __future__ import annotations

import io
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from stackmatrix.domain import Verdict
from stackmatrix.reports.table import Report, pivot

if TYPE_CHECKING:
    import pandas as pd

# Strongest evidence first (Verdict's order): greens for passes, darker = more observed; then the caveat (amber),
# the failures (red, purple) and grey for what did not run. Distinct in hue and lightness for colour-blind readers.
PALETTE: dict[Verdict, str] = {
    Verdict.SERVES: "#1a7f37",
    Verdict.RUNS_TINY: "#4fb35f",
    Verdict.PREDICTED: "#a6dba0",
    Verdict.OVERRIDE: "#f2b701",
    Verdict.BLOCKED: "#d1242f",
    Verdict.NO_FIT: "#8250df",
    Verdict.NOT_RUN: "#9ca3af",
}
DPI = 100
CELL_IN = 0.15  # one cell in inches: room for a 6.5 pt label per row and per column
FONT_PT = 6.5
CHAR_IN = FONT_PT * 0.56 / 72  # about DejaVu Sans' mean advance per character: sizes the margins from the longest label
# A user's matplotlibrc must not change the bytes: draw under matplotlib's defaults, with these on top.
RC = {"font.family": "DejaVu Sans", "font.size": FONT_PT, "axes.linewidth": 0.5, "savefig.dpi": DPI}


def _marked(df: pd.DataFrame, column: str) -> list[tuple[int, int]]:
    """(row, column) in the grid of each cell whose boolean ``column`` is set."""
    if not df[column].any():
        return []
    marks = pivot(df, ["x" if flag else "" for flag in df[column]]).to_numpy()
    return [(y, x) for y, row in enumerate(marks) for x, v in enumerate(row) if v == "x"]


def render_heatmap(report: Report) -> bytes:
    df = report.df
    order = list(Verdict)
    stacks: list[str] = []
    rows: list[tuple[str, str]] = []
    grid = np.ma.masked_invalid(np.full((1, 1), np.nan))
    flaky: list[tuple[int, int]] = []  # (row, column) of each flaky cell: marked "~" on its colour
    contradicted: list[tuple[int, int]] = []  # cells whose observation contradicts the prediction: marked "!"
    if not df.empty:
        table = pivot(df, list(df["verdict"]))
        stacks = [str(s) for s in table.columns]
        rows = [(str(m), str(t)) for m, t in table.index]
        # A cell the run does not hold is "" in the pivot: NaN here, masked, drawn blank.
        code = {str(v): float(i) for i, v in enumerate(order)}
        grid = np.ma.masked_invalid(np.array([[code.get(v, np.nan) for v in row] for row in table.to_numpy()]))
        flaky, contradicted = _marked(df, "flaky"), _marked(df, "contradiction")
    n_rows, n_cols = max(len(rows), 1), max(len(stacks), 1)

    # Row labels in two columns: the target on every row, the model once per group (half the glyphs to draw).
    target_in = CHAR_IN * max((len(t) for _, t in rows), default=0) + 0.15
    left = 0.3 + target_in + CHAR_IN * max((len(m) for m, _ in rows), default=0)
    bottom = 0.3 + CHAR_IN * max(map(len, stacks), default=0)
    top, right = 0.9, 0.3  # title and legend above the grid
    width = max(left + right + CELL_IN * n_cols, 8.0)  # the legend needs ~8 in in a single row
    height = bottom + top + CELL_IN * n_rows

    with style.context(["default", RC]):
        fig = Figure(figsize=(width, height), dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((left / width, bottom / height, CELL_IN * n_cols / width, CELL_IN * n_rows / height))
        cmap = ListedColormap([PALETTE[v] for v in order]).with_extremes(bad="white")
        norm = BoundaryNorm(np.arange(len(order) + 1) - 0.5, cmap.N)
        ax.pcolormesh(grid, cmap=cmap, norm=norm, edgecolors="white", linewidth=0.4)
        for mark, cells in (("~", flaky), ("!", contradicted)):
            for y, x in cells:
                ax.text(x + 0.5, y + 0.5, mark, ha="center", va="center", fontsize=FONT_PT, parse_math=False)
        ax.set_xlim(0, n_cols)
        ax.set_ylim(n_rows, 0)  # first row on top, as in the tables
        # Labels as plain texts, not ticks: 170 Tick objects (each two lines and two texts, measured twice for
        # the axis layout) cost half the render time and draw nothing we need.
        ax.set_axis_off()
        for x, stack in enumerate(stacks):
            ax.text(
                x + 0.5, n_rows + 0.25, stack, rotation=90, ha="center", va="top", fontsize=FONT_PT, parse_math=False
            )
        for y, (_, target) in enumerate(rows):
            ax.text(-0.25, y + 0.5, target, ha="right", va="center", fontsize=FONT_PT, parse_math=False)
        # Each model once, centred on its rows, with a darker rule between models: its targets read as a group.
        starts = [y for y, (m, _) in enumerate(rows) if y == 0 or m != rows[y - 1][0]]
        for start, end in pairwise([*starts, len(rows)]):
            ax.text(
                -0.25 - target_in / CELL_IN,
                (start + end) / 2,
                rows[start][0],
                ha="right",
                va="center",
                parse_math=False,
            )
            if start:
                ax.axhline(start, color="#444444", linewidth=0.6)
        counts = df["verdict"].value_counts().to_dict()
        handles = [Patch(facecolor=PALETTE[v], label=f"{v} ({counts.get(str(v), 0)})") for v in order]
        if flaky:
            handles.append(Patch(facecolor="white", edgecolor="#444444", label=f"~ flaky ({len(flaky)})"))
        if contradicted:
            label = f"! observed contradicts predicted ({len(contradicted)})"
            handles.append(Patch(facecolor="white", edgecolor="#444444", label=label))
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(left / width, 1 - 0.4 / height),
            ncol=len(handles),
            frameon=False,
            fontsize=FONT_PT + 1,
            handlelength=1.2,
            columnspacing=1.2,
        )
        fig.text(
            left / width,
            1 - 0.12 / height,
            report.title,
            va="top",
            fontsize=FONT_PT + 3,
            weight="bold",
            parse_math=False,
        )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()

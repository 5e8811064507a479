"""The heatmap PNG, decoded: deterministic bytes, a size that follows the grid, one palette colour per verdict."""

from __future__ import annotations

import dataclasses
import io

import matplotlib
import numpy as np
import numpy.typing as npt
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.ladder.verdict import decided
from stackmatrix.reports.heatmap import CELL_IN, DPI, PALETTE, render_heatmap
from stackmatrix.reports.table import Report

META = {"run_id": "20260101T000000Z-abcdef"}
MODELS = ("google/gemma-4-E4B-it", "google/gemma-4-31B-it")
TARGETS = ("h100x1", "l4x1", "l4x2")
CELL_PX = CELL_IN * DPI
INNER_PX = (CELL_PX - 2) ** 2  # a cell less its white edges


def cell(stack: str, model: str, target: str, verdict: Verdict) -> CellResult:
    outcome = Outcome("arch", Status.PASS if verdict is Verdict.PREDICTED else Status.FAIL, Reason.ARCH_UNSUPPORTED)
    return decided(
        CellResult(
            f"{stack}__{model.rsplit('/', 1)[-1].lower()}__{target}",
            verdict,
            None,
            None,
            (outcome,),
            "fp",
            {"kind": "vllm", "model": model, "target": target},
        )
    )


def report(stacks: int, verdicts: tuple[Verdict, ...] = (Verdict.PREDICTED, Verdict.BLOCKED)) -> Report:
    results = [
        cell(f"vllm-0.{20 + s}.0-tf5.5.0", m, t, verdicts[(s + i) % len(verdicts)])
        for s in range(stacks)
        for i, (m, t) in enumerate((m, t) for m in MODELS for t in TARGETS)
    ]
    return Report.of(results, META)


def pixels(png: bytes) -> npt.NDArray[np.uint8]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = imread(io.BytesIO(png), format="png")
    return np.asarray(np.round(image[..., :3] * 255), dtype=np.uint8)


def rgb(verdict: Verdict) -> tuple[int, int, int]:
    r, g, b = to_rgb(PALETTE[verdict])
    return round(r * 255), round(g * 255), round(b * 255)


def area(image: npt.NDArray[np.uint8], verdict: Verdict) -> int:
    """Pixels of exactly the verdict's palette colour."""
    return int(np.all(image == rgb(verdict), axis=-1).sum())


def test_same_report_same_bytes_even_under_a_users_rc_settings() -> None:
    first = render_heatmap(report(3))
    assert render_heatmap(report(3)) == first
    # A matplotlibrc (or another library's rcParams) must not leak into the report.
    with matplotlib.rc_context({"font.size": 20, "font.family": "serif", "figure.facecolor": "black"}):
        assert render_heatmap(report(3)) == first


def test_every_verdict_present_has_its_palette_colour() -> None:
    assert len(set(PALETTE.values())) == len(Verdict)  # one colour per verdict
    image = pixels(render_heatmap(report(7, tuple(Verdict))))  # each verdict in 6 of the 42 cells
    for v in Verdict:
        # Cell interiors are exactly the palette colour (white edges aside); the legend swatch alone is smaller.
        assert area(image, v) > 6 * INNER_PX, v


def test_size_follows_the_grid() -> None:
    small, wide = (pixels(render_heatmap(report(n))) for n in (60, 80))
    rows = len(MODELS) * len(TARGETS)
    assert wide.shape[0] == small.shape[0] > rows * CELL_PX  # same rows, same height
    assert wide.shape[1] > 80 * CELL_PX
    assert abs(wide.shape[1] - small.shape[1] - 20 * CELL_PX) <= 1  # each stack adds one cell width
    assert pixels(render_heatmap(report(1))).shape[1] >= 8 * DPI  # room for the legend on one line


def test_missing_cells_are_blank_and_a_stack_without_cells_has_no_column() -> None:
    results = report(60, (Verdict.BLOCKED,)).results
    full = pixels(render_heatmap(Report.of(results, META)))
    # One model loses one stack's cells: the grid keeps its shape, those three cells are blank.
    kept = [r for r in results if not r.cell_id.startswith("vllm-0.21.0-tf5.5.0__gemma-4-31b")]
    partial = pixels(render_heatmap(Report.of(kept, META)))
    assert partial.shape == full.shape
    lost = area(full, Verdict.BLOCKED) - area(partial, Verdict.BLOCKED)
    assert 3 * INNER_PX <= lost <= 3 * (CELL_PX + 1) ** 2
    # No model keeps it: the column goes.
    gone = pixels(render_heatmap(Report.of([r for r in results if not r.cell_id.startswith("vllm-0.21.0")], META)))
    assert abs(full.shape[1] - gone.shape[1] - CELL_PX) <= 1


def test_empty_report_renders() -> None:
    assert pixels(render_heatmap(Report.of([], META))).shape[0] > 0


def test_a_contradicted_cell_is_marked_and_counted_in_the_legend() -> None:
    """The same grid with one cell whose observation contradicts its prediction: the "!" mark (black text on the
    cell's colour) and its legend entry are drawn; nothing else changes size."""
    plain = report(2)
    results = list(plain.results)
    first = results[0]
    results[0] = dataclasses.replace(
        first,
        verdict=Verdict.RUNS_TINY,
        declared_verdict=Verdict.BLOCKED,
        observed_verdict=Verdict.RUNS_TINY,
        contradiction=True,
    )
    marked = Report.of(results, META)
    unmarked = Report.of([dataclasses.replace(results[0], contradiction=False), *results[1:]], META)
    a, b = pixels(render_heatmap(marked)), pixels(render_heatmap(unmarked))
    assert a.shape == b.shape and not np.array_equal(a, b)
    dark = np.all(a < 80, axis=-1).sum() - np.all(b < 80, axis=-1).sum()
    assert dark > 0  # the mark and the legend's text


def test_a_title_with_tex_in_it_is_drawn_as_plain_text() -> None:
    """`report --title '$\\bad{x}$'` exited 1 (matplotlib parsed it as math)."""
    plain = report(1)
    titled = Report.of(list(plain.results), META, title="$\\bad{x}$ & 100% <b>")
    assert pixels(render_heatmap(titled)).shape[2] == 3

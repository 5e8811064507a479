"""The frontier view of a stored run: per model x target and per lane (a kind of stack: vLLM's own server, a Triton
release's stock container, Triton with vLLM/transformers replaced, Triton's Python backend), the first release whose
stack reaches ``predicted`` or better, and a note saying why the release before it does not.

Derived from the table's columns alone (no probing, no pandas): the whitepaper's table, one page for the default
matrix. Markdown, LaTeX and the terminal render the same ``Frontier``; ``--view grid`` gives every stack a column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from stackmatrix.domain import NAMING, StackKind, Verdict
from stackmatrix.reports.table import FLAKY, Columns, note_text

# What a frontier entry must reach: the declared prediction or anything observed above it (never ``override``:
# that needs a change the declared requirements forbid).
REACHES = frozenset({Verdict.SERVES, Verdict.RUNS_TINY, Verdict.PREDICTED})
_STRENGTH = {v: n for n, v in enumerate(Verdict)}  # strongest evidence first (domain.Verdict's order)


@dataclass(frozen=True)
class Lane:
    """A column of the frontier: one kind of stack, the stock Triton containers apart from the replaced ones."""

    name: str
    title: str


STOCK = "-stock"  # a kind's stock containers' lane: the kind's name and this


def _lanes() -> tuple[Lane, ...]:
    """Per kind (domain.NAMING's order) its stock containers' lane where it has one, then its own."""
    lanes: list[Lane] = []
    for kind, naming in NAMING.items():
        if naming.stock_title:
            lanes.append(Lane(f"{kind}{STOCK}", naming.stock_title))
        lanes.append(Lane(str(kind), naming.title or str(kind)))
    return tuple(lanes)


LANES = _lanes()


@dataclass(frozen=True)
class Entry:
    """A lane's answer for one model x target: the first stack that reaches (``verdict`` its verdict, ``label``
    the stack, short); or none (``verdict`` None). ``note``: the footnote's number, or None."""

    verdict: Verdict | None
    label: str
    note: int | None


@dataclass(frozen=True)
class Frontier:
    lanes: tuple[Lane, ...]  # the lanes the run holds cells of, in LANES' order
    rows: tuple[tuple[str, str, tuple[Entry | None, ...]], ...]  # model, target, per lane its entry (None: no cell)
    notes: tuple[str, ...]  # note n is notes[n - 1]
    flaky: tuple[str, ...] = ()  # the cells whose verdict changed between attempts (the grid marks each)

    @property
    def empty(self) -> bool:
        return not self.rows


@dataclass(frozen=True)
class _Cell:
    stack: str
    lane: str
    in_triton: bool  # its release is a Triton release's (else the vLLM's own)
    release: str
    vllm: str
    transformers: str
    verdict: Verdict
    because: str  # the footnote text of its verdict ("" for a plain pass)
    caveat: str = ""  # what its passing rungs passed through (a fallback kernel, a driver's compatibility)

    def key(self) -> tuple[Any, ...]:
        """Oldest first: the release, then what it holds (vLLM, then transformers)."""
        return (_order(self.release), _order(self.vllm), _order(self.transformers), self.stack)

    @property
    def stock(self) -> bool:
        return self.lane.endswith(STOCK)

    @property
    def label(self) -> str:
        """The stack as an entry shows it: what tells it from the other stacks of its lane (a stock container:
        the release; else the release, if not its own, and what was put in)."""
        if self.stock:
            return self.release
        put = ", ".join(f"{name} {v}" for name, v in (("vLLM", self.vllm), ("tf", self.transformers)) if v)
        if not self.in_triton:  # vLLM's own server: the release is the vLLM
            return put.removeprefix("vLLM ")
        return f"{self.release} + {put}" if put else self.release

    @property
    def named(self) -> str:
        """The stack as a note names it: its id, and for a stock container what it ships."""
        if not self.stock:
            return self.stack
        ships = ", ".join(f"{name} {v}" for name, v in (("vLLM", self.vllm), ("transformers", self.transformers)) if v)
        return self.stack + (f" ({ships})" if ships else "")


def _order(text: str) -> tuple[int, Version, str]:
    """A version's place (a Triton release YY.MM is one too); what is no version sorts first, by its text."""
    try:
        return (1, Version(text), "")
    except InvalidVersion:
        return (0, Version("0"), text)


def lane_of(kind: str, stack: str, triton: str | None) -> str | None:
    """The lane of a stack: its kind's, or its kind's stock lane for a release's stock container (an id that is
    the release alone); None for a kind this version does not know (a store written by a later one)."""
    naming = next((n for k, n in NAMING.items() if k == kind), None)
    if naming is None:
        return None
    stock = naming.stock_title and naming.in_triton and stack == f"{naming.prefix}-{triton}"
    return f"{kind}{STOCK}" if stock else kind


def _cells(cols: Columns) -> dict[tuple[str, str], dict[str, list[_Cell]]]:
    """The run's cells by model x target, then by lane."""
    names = ("stack", "kind", "triton", "vllm", "transformers", "model", "target", "verdict", "reason", "override")
    out: dict[tuple[str, str], dict[str, list[_Cell]]] = {}
    for row in zip(*(cols[n] for n in (*names, "why", "caveat")), strict=True):
        stack, kind, triton, vllm, tf, model, target, verdict, reason, override, why, caveat = (
            str(v or "") for v in row
        )
        lane = lane_of(kind, stack, triton)
        if lane is None or verdict not in Verdict.__members__.values():
            continue
        in_triton = NAMING[StackKind(kind)].in_triton
        because = note_text(reason, override, why)
        release = triton if in_triton else vllm
        cell = _Cell(stack, lane, in_triton, release, vllm, tf, Verdict(verdict), because, caveat)
        out.setdefault((model, target), {}).setdefault(lane, []).append(cell)
    return out


def _answer(cells: Sequence[_Cell]) -> tuple[_Cell | None, str]:
    """The first stack of the lane that reaches, and the note: why the release before it does not (its strongest
    stack, the newest of equals), or why none reaches (the newest release's strongest, and the newest decided one's
    where that was not run), and what the stack that reaches passes through (its caveat). "" where the first stack that
    reaches is of the oldest release the run holds and passes plainly."""
    releases: dict[str, list[_Cell]] = {}
    for cell in sorted(cells, key=_Cell.key):
        releases.setdefault(cell.release, []).append(cell)
    ordered = list(releases.values())
    for n, held in enumerate(ordered):
        first = next((c for c in held if c.verdict in REACHES), None)
        if first is not None:
            said = [f"the release before: {_why(_best(ordered[n - 1]))}" if n else "", first.caveat]
            return first, "; ".join(x for x in said if x)
    newest = _best(ordered[-1])
    note = f"none reaches predicted; the newest release: {_why(newest)}"
    if newest.verdict is Verdict.NOT_RUN:  # undecided: what the newest release that was decided says, if one was
        decided = next((b for b in map(_best, reversed(ordered)) if b.verdict is not Verdict.NOT_RUN), None)
        note += f"; the newest decided: {_why(decided)}" if decided else ""
    return None, note


def _best(held: Sequence[_Cell]) -> _Cell:
    """A release's strongest stack (the newest of equals): what it came closest with."""
    return min(reversed(held), key=lambda c: _STRENGTH[c.verdict])


def _why(cell: _Cell) -> str:
    return f"{cell.named} {cell.verdict}" + (f": {cell.because}" if cell.because else "")


def frontier(cols: Columns) -> Frontier:
    """The frontier of a table (``Report.columns``); notes numbered by distinct text in row order."""
    by_row = _cells(cols)
    held = {lane for lanes in by_row.values() for lane in lanes}
    lanes = tuple(lane for lane in LANES if lane.name in held)
    notes: dict[str, int] = {}
    rows = []
    for (model, target), cells in sorted(by_row.items()):
        entries: list[Entry | None] = []
        for lane in lanes:
            if lane.name not in cells:
                entries.append(None)
                continue
            first, note = _answer(cells[lane.name])
            number = notes.setdefault(note, len(notes) + 1) if note else None
            entries.append(Entry(first.verdict, first.label, number) if first else Entry(None, "none", number))
        rows.append((model, target, tuple(entries)))
    flaky = tuple(c for c, f in zip(cols["cell"], cols["flaky"], strict=True) if f)
    return Frontier(lanes, tuple(rows), tuple(notes), flaky)


def flaky_lines(f: Frontier) -> list[str]:
    """What every rendering says below its notes of the cells whose verdict changed between attempts."""
    return [f"{FLAKY}: {cell}" for cell in f.flaky]


# What every rendering says above the table (the reader's key to it).
INTRO = (
    "Per model \u00d7 target and kind of stack: the first release whose stack reaches predicted or better, and in its "
    "note why the release before it does not. No note: the oldest release the run holds already reaches; none: no "
    "release does (the note says why the newest fails); blank: the run holds no stack of that kind. Every stack: "
    "stackmatrix report --view grid."
)

"""``check``'s answer: one cell's record, as a line per rung on a terminal or whole as JSON."""

from __future__ import annotations

import json

from stackmatrix.domain import CellResult
from stackmatrix.inert import term_text


def render_table(result: CellResult, source: str) -> str:
    """``source``: the run the record was stored by when it is a cache hit ("" when probed now). A detail may
    quote an image, an index or a log: no escape sequence passes."""
    lines = [
        f"{result.cell_id}: {result.verdict}"
        + (f" ({result.reason})" if result.reason else "")
        + (f" — override {result.override}" if result.override else "")
        + (f" [stored: run {source}, fingerprint {result.fingerprint}]" if source else "")
    ]
    lines += [f"  {o.probe:<16} {o.status!s:<5} {o.reason or '':<28} {term_text(o.detail)}" for o in result.outcomes]
    if result.observed:
        lines.append(term_text("  observed: " + ", ".join(f"{k} {v}" for k, v in result.observed.items())))
    return "\n".join(lines) + "\n"


def render_json(result: CellResult, source: str) -> str:
    """The whole record, evidence included, as the journal holds it."""
    return json.dumps(result.to_json(), indent=1) + "\n"

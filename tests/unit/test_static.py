"""The static rungs' memo keys: two cells share an outcome only when everything it depends on is the same."""

from __future__ import annotations

from stackmatrix.domain import Cell, Stack, StackKind, Target
from stackmatrix.ladder.static import MODEL_TYPE
from stackmatrix.matrix.catalog import load_catalog


def _cell(stack: Stack) -> Cell:
    catalog = load_catalog()
    return Cell(stack, catalog.model("gemma-4-E4B-it"), Target("l4x1", catalog.gpus["L4"], 1, 1))


def test_an_inferred_stock_transformers_is_not_judged_as_a_pinned_one() -> None:
    """26.04's stock transformers inferred as 4.57.6 may be not-run (what shipped is unknown); the same 4.57.6
    pinned in an upgrade is plainly blocked: the model-type rung must not hand one's outcome to the other."""
    stock = Stack(StackKind.TRITON_VLLM, "0.19.0", "4.57.6", "3.12", triton="26.04", transformers_rule="@release-day")
    pinned = Stack(StackKind.TRITON_VLLM, "0.19.0", "4.57.6", "3.12", triton="26.04")
    read = Stack(StackKind.TRITON_VLLM, "0.19.0", "4.57.6", "3.12", triton="26.04", transformers_rule="@image")
    assert MODEL_TYPE.key(_cell(stock)) != MODEL_TYPE.key(_cell(pinned))
    assert MODEL_TYPE.key(_cell(pinned)) == MODEL_TYPE.key(_cell(read))  # known versions: the release is moot

"""The id pattern every id part matches, and the store's own last check before it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.ids import MAX_PART, check_cell_id, check_id_part, child, is_cell_id, is_id_part

GOOD = [
    "l4x1",
    "h100x2",
    "gemma-4-e4b-it",
    "vllm-0.19.0-tf5.5.0",
    "triton-26.03-vllm0.22.1-tf5.6.0",
    "2.13.0+cpu",
    "20261130T134108.123456Z-1a2b3c",
    "a_b",
    "A",
    "0",
]
BAD = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "a\\b",
    "/abs",
    ".hidden",
    "a__b",
    "a b",
    "a..b",
    "a-",
    "-a",
    "a_",
    "l4\x00",
    "é",
    "a\nb",
    "x" * (MAX_PART + 1),
    "a--b",
    "a.-b",
]


@pytest.mark.parametrize("text", GOOD)
def test_good_parts(text: str) -> None:
    assert is_id_part(text) and check_id_part(text, "w", "k") == text


@pytest.mark.parametrize("text", BAD)
def test_bad_parts_are_bad_input_naming_where(text: str) -> None:
    assert not is_id_part(text)
    with pytest.raises(BadInput) as exc:
        check_id_part(text, "m.toml", "targets.x")
    assert (exc.value.where, exc.value.key, exc.value.value) == ("m.toml", "targets.x", text)


def test_cell_ids() -> None:
    assert is_cell_id("vllm-0.19.0-tf5.5.0__gemma-4-e4b-it__l4x1")
    for bad in ("a__b", "a__b__c__d", "a___b__c", "../a__b__c", "a__b__c/", "a__b__.c", 3, None):
        assert not is_cell_id(bad)
    with pytest.raises(BadInput):
        check_cell_id("a__../b__c", "plan.json", "cells")


def test_child_stays_inside(tmp_path: Path) -> None:
    assert child(tmp_path, "x.json") == tmp_path / "x.json"
    for bad in ("../x.json", "a/x.json", "..", ".", ".x.json", "/etc/passwd"):
        with pytest.raises(BadInput):
            child(tmp_path, bad)

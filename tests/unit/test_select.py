from __future__ import annotations

import pytest

from stackmatrix.domain import Cell, Stack, StackKind, Target
from stackmatrix.errors import BadInput
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.matrix.select import parse_shard, select


@pytest.fixture(scope="module")
def cells() -> list[Cell]:
    cat = load_catalog()
    targets = [Target("l4x1", cat.gpus["L4"], 1, 1), Target("h100x1", cat.gpus["H100-80GB"], 1, 1)]
    stacks = [Stack(StackKind.VLLM, v, "5.5.0", "3.12") for v in ("0.19.0", "0.20.0")] + [
        Stack(StackKind.TRITON_VLLM, "0.17.1", "4.57.6", "3.12", triton="26.03", transformers_rule="@release-day")
    ]
    models = [cat.model("gemma-4-E4B-it"), cat.model("gemma-4-31B-it")]
    return [Cell(s, m, t) for s in stacks for m in models for t in targets]


def test_keyword_expression(cells: list[Cell]) -> None:
    ids = [c.id for c in select(cells, keyword="e4b and not triton and (l4x1 or H100X1)")]
    assert ids and all("e4b" in i and "triton" not in i for i in ids)
    assert len(ids) == 4


def test_only_globs_are_case_insensitive_and_repeatable(cells: list[Cell]) -> None:
    got = select(cells, only=["triton-26.03__*__L4X1", "vllm-0.20.0__*"])
    assert [c.id for c in got] == ["triton-26.03__gemma-4-31b-it__l4x1", "triton-26.03__gemma-4-e4b-it__l4x1"]


def test_shards_partition_the_selection(cells: list[Cell]) -> None:
    shards = [select(cells, shard=f"{i}/3") for i in (1, 2, 3)]
    ids = sorted(c.id for s in shards for c in s)
    assert ids == sorted(c.id for c in cells)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "1/0"])
def test_bad_shard(bad: str) -> None:
    with pytest.raises(BadInput, match="--shard"):
        parse_shard(bad)


@pytest.mark.parametrize("bad", ["e4b and", "(e4b", "and e4b", "e4b e2b", ""])
def test_bad_keyword(cells: list[Cell], bad: str) -> None:
    with pytest.raises(BadInput, match="-k"):
        select(cells, keyword=bad or " ")


def test_long_valid_expressions_do_not_recurse(cells: list[Cell]) -> None:
    words = [f"w{i}" for i in range(3000)]
    assert select(cells, keyword=" or ".join([*words, "e4b"])) == select(cells, keyword="e4b")
    assert select(cells, keyword=" and ".join(["gemma"] * 3000)) == select(cells)
    assert select(cells, keyword="(" * 60 + "e4b" + ")" * 60) == select(cells, keyword="e4b")


@pytest.mark.parametrize("bad", ["(" * 3000 + "e4b" + ")" * 3000, "not " * 3000 + "e4b", "(" * 3000])
def test_nesting_is_bounded(cells: list[Cell], bad: str) -> None:
    with pytest.raises(BadInput, match="-k") as exc:
        select(cells, keyword=bad)
    assert len(str(exc.value)) < 500  # the expression is not echoed whole


def test_an_empty_shard_is_bad_input(cells: list[Cell]) -> None:
    with pytest.raises(BadInput, match="--shard"):
        select(cells, shard="")

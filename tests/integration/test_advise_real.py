"""``advise`` against real wheels on the seed scenario: a site on Triton 26.03 that must serve Gemma 4 E2B and E4B
on one L4 each and the 31B FP8 on two L4s (matrix/policies/edge-4xl4.toml)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.cli.main import main
from stackmatrix.domain import PASSING

pytestmark = pytest.mark.network

POLICY = Path(__file__).resolve().parents[2] / "matrix" / "policies" / "edge-4xl4.toml"
WANTED = PASSING[: PASSING.index("predicted") + 1]


def advise(capsys: pytest.CaptureFixture[str], cache_dir: Path, *args: str) -> tuple[int, Any]:
    code = main(["advise", "--cache-dir", str(cache_dir), "--format", "json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_the_seed_scenario_gets_the_smallest_changes_that_serve(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    code, doc = advise(capsys, cache_dir, "--policy", str(POLICY), "--best", "3")
    assert code == 0
    assert doc["current"] == {"spec": "triton=26.03", "stack": "triton-26.03", "met": 0}
    assert doc["checked"] > 20 and len(doc["best"]) == 3
    for cand in doc["best"]:  # each meets every requirement, by the static tier's real verdicts
        assert cand["meets"] and [c["verdict"] in WANTED for c in cand["cells"]] == [True] * 3
    sizes = [tuple(c["size"].values()) for c in doc["best"]]
    assert sizes == sorted(sizes)  # the smallest change first
    for near in doc["nearer"]:  # each failing candidate says why, naming a requirement
        assert not near["meets"] and "is " in near["fails_because"] and "on l4x" in near["fails_because"]
    code = main(["advise", "--cache-dir", str(cache_dir), "--policy", str(POLICY)])
    md = capsys.readouterr().out
    assert code == 0 and "### The smallest changes that serve" in md and "### Nearer candidates that fail" in md


def test_nothing_serves_is_exit_1_with_the_closest_and_why(capsys: pytest.CaptureFixture[str], cache_dir: Path) -> None:
    args = ["--current", "triton=26.03", "--model", "google/gemma-4-31B-it", "--gpu", "l4x1"]  # bf16 31B on 24 GB
    code, doc = advise(capsys, cache_dir, *args)
    assert code == 1 and doc["best"] == [] and doc["nearer"]
    assert all(n["fails_because"] for n in doc["nearer"])


@pytest.mark.parametrize(
    "args",
    [
        ["--current", "triton=26.03", "--model", "gemma-9"],
        ["--current", "vllm=9.9.9", "--model", "gemma-4-E2B-it"],
        ["--current", "triton=99.01", "--model", "gemma-4-E2B-it"],
        ["--current", "kubernetes=1", "--model", "gemma-4-E2B-it"],
        ["--model", "gemma-4-E2B-it"],
        ["--current", "triton=26.03"],
        ["--current", "triton=26.03", "--model", "gemma-4-E2B-it", "--gpu", "tpu9x1"],
    ],
)
def test_unknown_components_versions_or_models_are_exit_2(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, args: list[str]
) -> None:
    code, _ = advise(capsys, cache_dir, *args)
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") <= 2 and "Traceback" not in err

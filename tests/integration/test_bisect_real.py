"""``bisect`` against real wheels: where Gemma 4 support starts along vLLM and along transformers (static tier:
every release decided)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from stackmatrix.cli.main import main

pytestmark = pytest.mark.network


def bisect(capsys: pytest.CaptureFixture[str], cache_dir: Path, *args: str) -> tuple[int, Any]:
    code = main(["bisect", "--cache-dir", str(cache_dir), "--format", "json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_where_gemma_4_starts_along_vllm(capsys: pytest.CaptureFixture[str], cache_dir: Path) -> None:
    code, doc = bisect(
        capsys, cache_dir, "--axis", "vllm", "--model", "gemma-4-E4B-it", "--gpu", "l4x1", "--regression"
    )
    assert code == 0 and doc["probed"] == doc["releases"] > 40 and doc["monotonic"]
    first = doc["first"]
    assert Version(first) >= Version("0.19.0")  # Gemma 4 came to vLLM in 0.19 (FACTS)
    verdicts = doc["verdicts"]
    releases = list(verdicts)
    before = releases[releases.index(first) - 1]
    assert verdicts[first] == "predicted" and verdicts[before] != "predicted"  # both sides of the boundary
    assert doc["last"] == releases[-1]  # no regression: the newest still predicts it


def test_where_gemma_4_starts_along_transformers(capsys: pytest.CaptureFixture[str], cache_dir: Path) -> None:
    args = ["--axis", "transformers", "--vllm", "0.20.0", "--model", "gemma-4-E4B-it", "--min", "override"]
    code, doc = bisect(capsys, cache_dir, *args)
    assert code == 0 and doc["first"] == "5.5.0"  # the first transformers that registers gemma4
    code = main(["bisect", "--cache-dir", str(cache_dir), *args])
    md = capsys.readouterr().out
    assert (
        "**First release that reaches it: transformers 5.5.0**" in md and "the probe that changed: `model-type`" in md
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--axis", "vllm", "--vllm", "0.19.0", "--model", "gemma-4-E4B-it"],
        ["--axis", "vllm", "--model", "gemma-9"],
        ["--axis", "transformers", "--vllm", "9.9.9", "--model", "gemma-4-E4B-it"],
        ["--axis", "vllm", "--transformers", "@tomorrow", "--model", "gemma-4-E4B-it"],
        ["--axis", "cuda", "--model", "gemma-4-E4B-it"],
        ["--axis", "vllm", "--model", "gemma-4-E4B-it", "--gpu", "tpu9x1"],
    ],
)
def test_bad_input_is_exit_2(capsys: pytest.CaptureFixture[str], cache_dir: Path, args: list[str]) -> None:
    code, _ = bisect(capsys, cache_dir, *args)
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_runtime_search_runs_at_most_log2_n_plus_2_ladders(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime path of the command with a stubbed rung (one ladder each): the static tier on real wheels
    prunes the axis, the search climbs only what stands, the boundary's two sides are both climbed."""
    import math
    from dataclasses import replace

    from stackmatrix.answers import bisect as bisect_module
    from stackmatrix.domain import Verdict

    climbed: list[str] = []

    def stub(cell: Any, static: Any, *rest: Any) -> Any:
        climbed.append(cell.stack.vllm)
        ok = Version(cell.stack.vllm) >= Version("0.25.0")  # the stub's truth: the engine runs from 0.25.0
        return replace(static, verdict=Verdict.RUNS_TINY if ok else Verdict.BLOCKED)

    monkeypatch.setattr(bisect_module, "_climb", stub)
    args = ["--axis", "vllm", "--model", "gemma-4-E4B-it", "--tier", "runtime", "--min", "runs-tiny"]
    code, doc = bisect(capsys, cache_dir, *args)
    assert code == 0 and Version(doc["first"]) >= Version("0.25.0")
    assert len(climbed) == len(set(climbed)) == doc["probed"] <= math.ceil(math.log2(doc["standing"])) + 2
    assert doc["standing"] < doc["releases"]  # the static tier pruned the releases before Gemma 4
    below = [v for v in climbed if Version(v) < Version(doc["first"])]
    assert below and doc["verdicts"][max(below, key=Version)] == "blocked"  # the boundary's lower side was climbed

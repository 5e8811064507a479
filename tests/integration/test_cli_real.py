"""The CLI end to end on the real default matrix and the real index: run, list, faults, interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.cli.main import main
from stackmatrix.errors import Interrupted
from tests.frozen import AS_OF_ENV
from tests.records import records

from .conftest import CheckFn, probe

pytestmark = pytest.mark.network


def test_run_default_matrix_writes_cells_and_reports(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = tmp_path / "reports"
    code = main(["run", "--cache-dir", str(cache_dir), "--reports-dir", str(reports), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    (run_dir,) = (reports / "runs").iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    cells = records(run_dir)  # the journal: one line per finished cell, no cell file
    assert meta["status"] == "complete" and meta["cells_written"] == len(cells) == meta["cells_selected"]
    assert _lines(run_dir) == len(cells) and not (run_dir / "cells").exists()  # no cell written twice
    assert (meta["cells_probed"], meta["cache_hits"]) == (len(cells), 0)  # a new store: nothing to reuse
    assert len(cells) >= 1000
    verdicts = {c["verdict"] for c in cells.values()}
    assert {"predicted", "blocked", "override", "no-fit", "not-run"} <= verdicts
    assert all(c["declared_verdict"] for c in cells.values())  # the ladder's decisions are in the record
    latest = reports / "latest"
    # The Markdown is the frontier: a row per model x target, small enough for one pull-request comment.
    md = (latest / "readiness.md").read_text()
    assert "◇ predicted: declared only" in md and "● serves" in md and len(md) < 65_536, len(md)
    pairs = {(c["declared"]["model"], c["declared"]["target"]) for c in cells.values()}
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + len(pairs)  # the header, then the rows
    assert "◇ " in md and "none[^" in md and "[^1]: the release before: " in md
    # The frontier's LaTeX compiles to one page; the grid (every stack a column) is a --view away.
    rendered = tmp_path / "rendered"
    assert main(["report", "--reports-dir", str(reports), "--format", "tex", "--out", str(rendered)]) == 0
    pdf = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "readiness.tex"],
        cwd=rendered, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert pdf.returncode == 0 and "(1 page," in pdf.stdout, pdf.stdout[-2000:]
    grid_md = ["--view", "grid", "--format", "md", "--out", str(rendered)]
    assert main(["report", "--reports-dir", str(reports), *grid_md]) == 0
    grid = (rendered / "readiness.md").read_text()
    assert "✖[^" in grid and "[^1]: " in grid and len(grid) > len(md)  # blocked cells carry footnoted reasons
    csv = (latest / "readiness.csv").read_text().splitlines()
    assert csv[0].startswith("cell,stack,kind") and len(csv) == len(cells) + 1
    assert len(json.loads((latest / "readiness.json").read_text())) == len(cells)


def test_list_selection_and_shards(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--cache-dir", str(cache_dir), "-k", "e4b-it and l4x1 and triton-26.0"]) == 0
    ids = capsys.readouterr().out.split()
    assert ids and all("gemma-4-e4b-it" in i and i.endswith("__l4x1") and "triton-26.0" in i for i in ids)
    parts = []
    for i in (1, 2):
        assert (
            main(["list", "--cache-dir", str(cache_dir), "--only", "vllm-0.2*__*e2b*", "--shard", f"{i}/2", "--json"])
            == 0
        )
        parts.append({c["id"] for c in json.loads(capsys.readouterr().out)})
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert main(["list", "--cache-dir", str(cache_dir), "--only", "nothing-matches-*"]) == 3


def test_bad_matrix_exits_2_naming_the_key(cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text(
        '[targets.x]\ngpu = "L4"\ncount = 1\ntp = 1\n[models]\ninclude = ["*"]\n'
        '[[stack]]\nkind = "vllm"\nvllm = ["0.99.0"]\ntransformers = ["@newest"]\n'
    )
    assert main(["run", "--matrix", str(bad), "--cache-dir", str(cache_dir)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "stack[0].vllm" in err and "0.99.0" in err and "version-not-found" in err


def test_offline_uses_the_cache_and_fails_without_it(check: CheckFn, cache_dir: Path, tmp_path: Path) -> None:
    code, online = check("--model", "gemma-4-E4B-it", "--triton", "26.03", "--vllm", "0.22.1")
    assert code == 0
    code, offline = check("--model", "gemma-4-E4B-it", "--triton", "26.03", "--vllm", "0.22.1", "--offline")

    def timeless(result: dict[str, Any]) -> dict[str, Any]:  # the same record, but for how long each probe took
        return {**result, "probes": [{k: v for k, v in p.items() if k != "duration_s"} for p in result["probes"]]}

    assert code == 0 and timeless(offline) == timeless(online)
    empty = tmp_path / "empty"
    assert main(["check", "--cache-dir", str(empty), "--offline", "--model", "gemma-4-E4B-it"]) == 4


def test_unreachable_index_exits_4_with_cached_facts(check: CheckFn, monkeypatch: pytest.MonkeyPatch) -> None:
    # the newest view: an as-of's listing fetched after it is never asked for again, so nothing would be refreshed
    monkeypatch.delenv(AS_OF_ENV)
    args = ("--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "5.5.0")
    code, before = check(*args)
    assert code == 0
    monkeypatch.setenv("STACKMATRIX_INDEX_TTL", "0")  # force a listing refresh ...
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # ... through a proxy that is not there
    code, after = check(*args)
    assert code == 4
    assert after["verdict"] == before["verdict"] == "override"
    assert probe(after, "arch")["status"] == "pass"


def test_ctrl_c_keeps_the_cells_already_written(cache_dir: Path, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    env = {**os.environ, "STACKMATRIX_CACHE_DIR": str(cache_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackmatrix", "run", "--reports-dir", str(reports), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A CI runner started in the background (no job control) hands its children SIGINT ignored, and Python
        # then installs no KeyboardInterrupt handler: give the run the default a user's terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(reports.glob("runs/*/journal.jsonl"))
        if found and _lines(found[0].parent) >= 50:
            run_dir = found[0].parent
            break
        time.sleep(0.005)
    assert run_dir is not None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == Interrupted.exit_code, err  # 130
    meta = json.loads((run_dir / "run.json").read_text())
    kept = records(run_dir)  # every kept line is a whole record (a torn one would not parse)
    assert meta["status"] == "interrupted" and 50 <= meta["cells_written"] == len(kept) < meta["cells_selected"]
    assert _lines(run_dir) == len(kept)  # each cell once
    assert all(record["cell"] == cell and record["verdict"] for cell, record in kept.items())
    assert (run_dir / "journal.jsonl").read_bytes().endswith(b"\n") and not (run_dir / "cells").exists()


def _lines(run_dir: Path) -> int:
    """The journal's complete lines (a line still being written has no newline yet)."""
    path = run_dir / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_recipe_of_a_predicted_cell_and_refusals(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stored cell that serves gets its hashed lock (the record's pins, as of the run's view) and its vllm serve
    line; one that does not, or no cell of the run, is exit 2 naming it."""
    reports = tmp_path / "reports"
    base = ["--cache-dir", str(cache_dir), "--reports-dir", str(reports)]
    selection = "gemma-4-e4b-it__l4x2 and (vllm-0.22.1 or vllm-0.18.1)"
    assert main(["run", *base, "--quiet", "-k", selection]) == 0
    (run_dir,) = (reports / "runs").iterdir()
    cells = records(run_dir)
    good = next(c for c, r in cells.items() if r["verdict"] == "predicted")
    bad = next(c for c, r in cells.items() if r["verdict"] == "blocked")
    capsys.readouterr()
    out = tmp_path / "recipe"
    assert main(["recipe", good, *base, "--out", str(out)]) == 0
    declared = cells[good]["declared"]
    lock = (out / "requirements.txt").read_text()
    for project in ("vllm", "transformers"):  # the lock holds exactly the record's pins, every file hashed
        assert f"\n{project}=={declared[project]} \\\n    --hash=sha256:" in "\n" + lock
    assert "\ntorch==" in lock  # the whole tree, resolved for a GPU host (the index's torch, not a +cpu build)
    serve = (out / "serve.sh").read_text()
    assert f"vllm serve {declared['model']} --tensor-parallel-size 2 --max-model-len 8192" in serve
    assert os.access(out / "serve.sh", os.X_OK) and os.access(out / "install.sh", os.X_OK)
    capsys.readouterr()
    assert main(["recipe", bad, *base, "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert "a cell that serves" in err and f"this one is blocked ({cells[bad]['reason']}" in err
    assert not (tmp_path / "no").exists()
    assert main(["recipe", "vllm-9.9.9-tf1.0.0__nothing__l4x1", *base]) == 2
    assert "a cell of run" in capsys.readouterr().err

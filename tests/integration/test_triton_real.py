"""The Triton driver against a real tritonserver (2.51.0, bundled in the nvidia-pytriton wheel from PyPI): the
triton-python stack serves a tiny Gemma 4 checkpoint with transformers on this CPU, end to end, and a load that
fails for a real reason is classified."""

from __future__ import annotations

import contextlib
import json
import re
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

from .conftest import module_cache

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
    with module_cache(tmp_path_factory, "tcache") as cache:
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


IMAGES_MATRIX = """
[settings]
python = "3.12"
platform = "x86_64"
kv_reserve_tokens = 8192
gpu_memory_utilization = 0.90
overhead_gib = 1.0

[targets.l4x1]
gpu = "L4"
count = 1
tp = 1

[models]
include = ["google/gemma-4-E2B-it"]

[[stack]]
kind = "triton-vllm"
triton = ["24.10"]

[[stack]]
kind = "triton-python"
triton = ["24.10"]
transformers = ["5.19.0"]
"""


@pytest.mark.docker
@pytest.mark.registry
def test_image_build_plans_makes_and_pushes_then_finds_nothing_to_do(
    prepared: Prepared, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``image build`` (what ``nox -s images`` runs) on a matrix of two stacks of Triton 24.10, whose images are only
    in a loopback registry (token auth, the credentials in a Docker config.json, as a site keeps them): the plan
    says one to pull and one to build; the run pulls the stock image, builds the triton-python image on the release's
    py3 image, pushes both to ``<registry>/mirror``. A second run finds both here, reuses the cell image (nothing
    built or pulled) and finds both in the registry (nothing pushed)."""
    import base64

    from stackmatrix.cli.main import main
    from tests.registry import registries

    from .docker_base import engine, triton_python_base

    client = engine()
    local = triton_python_base(client, prepared.pytriton)  # stackmatrix-test/tritonserver:24.10-py3
    made: list[str] = []
    with registries(tmp_path / "registry") as (registry, _):
        assert registry.auth is not None
        config = tmp_path / "docker"
        config.mkdir()
        login = base64.b64encode(":".join(registry.auth).encode()).decode()
        (config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": login}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))  # the SDK reads it when the runner connects
        release = f"{registry.host}/public/tritonserver"
        auth = {"username": registry.auth[0], "password": registry.auth[1]}
        for variant in ("py3", "vllm-python-py3"):  # the release's two images, here only in the registry
            client.images.get(local).tag(release, f"24.10-{variant}")
            lines = list(client.images.push(release, f"24.10-{variant}", auth_config=auth, stream=True, decode=True))
            assert not [ln for ln in lines if "error" in ln], lines[-3:]
            client.images.remove(f"{release}:24.10-{variant}")
            made.append(f"{release}:24.10-{variant}")
        (tmp_path / "images.toml").write_text(IMAGES_MATRIX)
        args = ["image", "build", "--matrix", str(tmp_path / "images.toml"), "--cache-dir", str(prepared.cache)]
        args += ["--images", "none", "--triton-image", f"{release}:{{release}}-{{variant}}", "--override", TORCH]
        if any(LOCAL_TORCH.glob("torch-2.13.0+cpu-*.whl")):
            args += ["--torch-find-links", str(LOCAL_TORCH)]
        mirror = f"{registry.host}/mirror"
        try:
            assert main([*args, "--plan"]) == 0
            plan = capsys.readouterr().out
            assert "2 images: 1 to pull, 1 to build, 0 here" in plan, plan
            assert main([*args, "--push", mirror]) == 0
            first = capsys.readouterr().out
            built = re.search(r"tpy-24\.10-tf5\.19\.0: built (stackmatrix/triton-python:\w+)", first)
            assert built and "triton-24.10: pulled" in first, first
            made += [built.group(1), f"{mirror}/public/tritonserver:24.10-vllm-python-py3"]
            made.append(f"{mirror}/stackmatrix/triton-python:{built.group(1).rsplit(':', 1)[1]}")
            assert "1 built, 0 reused, 1 pulled, 0 here, 0 failed; 2 pushed to" in first, first
            assert main([*args, "--push", mirror]) == 0
            second = capsys.readouterr().out
            assert "0 to pull, 0 to build, 2 here" in second, second
            assert f"[here: {release}:24.10-vllm-python-py3 (sha256:" in second  # the digest it was pulled by
            assert "0 built, 1 reused, 0 pulled, 1 here, 0 failed: nothing to build or pull" in second, second
            assert "0 pushed to " in second and "2 there already" in second, second
        finally:
            for ref in made:
                with contextlib.suppress(Exception):
                    client.images.remove(ref)

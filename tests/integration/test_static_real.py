"""The static tier against the real published wheels on the package index (exact outcomes)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from stackmatrix.ladder.facts import Facts
from stackmatrix.wheels.http import Http
from stackmatrix.wheels.index import Index
from stackmatrix.wheels.reader import WheelReader

from .conftest import CheckFn, probe

pytestmark = pytest.mark.network


@pytest.mark.parametrize(
    ("vllm", "status", "reason"),
    [
        ("0.18.1", "fail", "arch-unsupported"),  # the registry predates Gemma 4
        ("0.19.0", "pass", None),  # first release that registers it
        ("0.22.1", "pass", None),
    ],
)
def test_arch_straddles_the_vllm_release_that_registers_gemma4(
    check: CheckFn, vllm: str, status: str, reason: str | None
) -> None:
    code, res = check("--model", "gemma-4-E4B-it", "--vllm", vllm, "--transformers", "4.57.6")
    assert code == 0
    arch = probe(res, "arch")
    assert (arch["status"], arch["reason"]) == (status, reason)
    if status == "pass":
        assert "Gemma4ForConditionalGeneration -> gemma4_mm.Gemma4ForConditionalGeneration" in arch["detail"]
    else:
        assert "has no Gemma4ForConditionalGeneration" in arch["detail"]


@pytest.mark.parametrize(
    ("transformers", "model_type", "verdict"),
    [
        ("5.4.0", ("fail", "model-type-unknown"), ("blocked", "model-type-unknown")),
        # first release with gemma4, but vLLM 0.20.0's declared bound excludes 5.5.0
        ("5.5.0", ("pass", None), ("override", "resolve-conflict")),
        # CONFIG_MAPPING_NAMES lives in the generated auto_mappings.py by then
        ("5.24.0", ("pass", None), ("predicted", None)),
    ],
)
def test_model_type_straddles_the_transformers_release_that_registers_gemma4(
    check: CheckFn, transformers: str, model_type: tuple[str, str | None], verdict: tuple[str, str | None]
) -> None:
    code, res = check("--model", "google/gemma-4-E4B-it", "--vllm", "0.20.0", "--transformers", transformers)
    assert code == 0
    mt = probe(res, "model-type")
    assert (mt["status"], mt["reason"]) == model_type
    assert res["cell"] == f"vllm-0.20.0-tf{transformers}__gemma-4-e4b-it__l4x1"
    assert (res["verdict"], res["reason"]) == verdict


def test_the_operators_upgrade_fails_on_the_backend_import_it_failed_on(check: CheckFn) -> None:
    """Triton 26.03's vLLM backend imports vllm.inputs.data; vLLM 0.22.1 no longer has that module."""
    code, res = check("--model", "gemma-4-E4B-it", "--triton", "26.03", "--vllm", "0.22.1", "--transformers", "5.6.0")
    assert code == 0
    bi = probe(res, "backend-imports")
    assert bi["status"] == "fail" and bi["reason"] == "backend-import-missing"
    assert "no module vllm.inputs.data" in bi["detail"]
    assert (res["verdict"], res["reason"]) == ("blocked", "backend-import-missing")


def test_stock_container_backend_matches_its_own_vllm_but_its_transformers_lacks_gemma4(check: CheckFn) -> None:
    code, res = check("--model", "gemma-4-E4B-it", "--triton", "26.03")
    assert code == 0
    assert res["cell"] == "triton-26.03__gemma-4-e4b-it__l4x1"
    assert probe(res, "backend-imports")["status"] == "pass"
    assert "container ships 0.17.1+fb2e3ab6" in probe(res, "backend-imports")["detail"]
    assert probe(res, "arch")["reason"] == "arch-unsupported"
    assert (res["verdict"], res["reason"]) == ("blocked", "model-type-unknown")


def test_backend_call_keywords_are_checked_against_the_signature(check: CheckFn) -> None:
    """Set I (26.01) calls AsyncLLM.from_vllm_config(...) with six keywords; vLLM 0.13.0 takes them all.
    Set F (25.10) passes stat_loggers= to build_async_engine_client_from_engine_args: the public 0.10.2 wheel
    does not take it (only NVIDIA's build in the 25.10 container can)."""
    _, stock = check("--model", "gemma-4-E4B-it", "--triton", "26.01")
    assert probe(stock, "backend-imports")["status"] == "pass"
    _, upgraded = check(
        "--model", "gemma-4-E4B-it", "--triton", "25.10", "--vllm", "0.10.2", "--transformers", "4.57.1"
    )
    bi = probe(upgraded, "backend-imports")
    assert (bi["status"], bi["reason"]) == ("fail", "backend-signature-mismatch")
    assert "build_async_engine_client_from_engine_args takes no stat_loggers" in bi["detail"]
    # Only the image could tell whether NVIDIA's build takes it; with its registry unreachable, the cell says so.
    dead = "127.0.0.1:1/nvidia/tritonserver:{release}-{variant}"
    _, stock25 = check("--model", "gemma-4-E4B-it", "--triton", "25.10", "--triton-image", dead)
    bi = probe(stock25, "backend-imports")
    assert (bi["status"], bi["reason"]) == ("skip", "registry-unreachable")
    assert "NVIDIA build 0.10.2+9dd9ca32" in bi["detail"] and "could not be read" in bi["detail"]


def test_override_names_the_dependency(check: CheckFn) -> None:
    code, res = check("--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "5.5.0")
    assert code == 0
    assert (res["verdict"], res["reason"], res["override"]) == ("override", "resolve-conflict", "transformers==5.5.0")
    assert "declares transformers<5,>=4.56.0" in probe(res, "resolve")["detail"]


def test_fit_on_the_targets(check: CheckFn) -> None:
    _, one = check("--model", "gemma-4-31B-it", "--vllm", "0.20.0", "--gpu", "l4x1")
    _, h100 = check("--model", "gemma-4-31B-it", "--vllm", "0.20.0", "--gpu", "h100x1")
    assert one["verdict"] == "no-fit" and probe(one, "fit")["reason"] == "does-not-fit"
    assert h100["verdict"] == "predicted"


def test_version_not_on_the_index_is_bad_input(check: CheckFn, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = check("--model", "gemma-4-E4B-it", "--vllm", "0.99.0")
    assert code == 2


def test_full_resolution_with_uv(check: CheckFn) -> None:
    code, res = check("--model", "gemma-4-E4B-it", "--vllm", "0.20.0", "--transformers", "5.6.2", "--resolve", "full")
    assert code == 0
    r = probe(res, "resolve")
    assert r["status"] == "pass" and "uv resolves the full tree" in r["detail"]


def test_wheelhouse_serves_the_facts(tmp_path: Path) -> None:
    http = Http()
    online = Index(http, tmp_path / "c1", "https://pypi.org/simple")
    wheel = online.wheel("transformers", "5.5.0")
    house = tmp_path / "house"
    house.mkdir()
    with httpx.Client(timeout=120, follow_redirects=True) as client:
        (house / wheel.filename).write_bytes(client.get(wheel.url).content)
    offline = Http(offline=True)
    index = Index(offline, tmp_path / "c2", "https://pypi.org/simple", find_links=house)
    facts = Facts(index, WheelReader(offline, tmp_path / "c2"))
    local = facts.wheel("transformers", "5.5.0", "3.12")
    assert local.url == str(house / wheel.filename)
    assert "gemma4" in facts.model_types(local)["model_types"]


# -- kernel: the scheme classes of vLLM's compressed-tensors code, read from the wheel ---------------------------
@pytest.mark.parametrize(
    ("vllm", "status", "reason", "says"),
    [
        # the Marlin class of 0.15.1 takes channel and tensor weights only: nothing runs block FP8 on an A100
        (
            "0.15.1",
            "fail",
            "kernel-unsupported",
            "CompressedTensorsW8A8Fp8 needs 8.9; CompressedTensorsW8A16Fp8 takes no block weights",
        ),
        # 0.16.0's Marlin class takes block weights: weight-only FP8, at the cost vLLM's own log states
        ("0.16.0", "pass", None, "through the fallback CompressedTensorsW8A16Fp8 (CompressedTensorsW8A8Fp8 needs 8.9)"),
    ],
)
def test_kernel_for_block_fp8_on_an_a100_differs_between_two_vllm_releases(
    check: CheckFn, vllm: str, status: str, reason: str | None, says: str
) -> None:
    code, res = check(
        "--model",
        "RedHatAI/gemma-4-31B-it-FP8-block",
        "--vllm",
        vllm,
        "--transformers",
        "4.57.6",
        "--gpu",
        "a100-80gbx1",
    )
    assert code == 0
    kernel = probe(res, "kernel")
    assert (kernel["status"], kernel["reason"]) == (status, reason), kernel["detail"]
    assert says in kernel["detail"]
    assert kernel["evidence"]["classes"] == ["CompressedTensorsW8A8Fp8", "CompressedTensorsW8A16Fp8"]
    if status == "pass":
        assert "This may degrade performance for compute-heavy workloads" in kernel["evidence"]["caveat"]


def test_kernel_native_where_the_gpu_has_the_cores_and_named_fallbacks_where_not(check: CheckFn) -> None:
    """NVFP4 in vLLM 0.15.1: CUTLASS's W4A4 class needs 10.0 (a B200), below it the Marlin W4A16 class runs."""
    nvfp4 = ("--model", "RedHatAI/gemma-4-26B-A4B-it-NVFP4", "--vllm", "0.15.1", "--transformers", "4.57.6")
    _, on_l4 = check(*nvfp4, "--gpu", "l4x1")
    _, on_b200 = check(*nvfp4, "--gpu", "b200x1")
    l4, b200 = probe(on_l4, "kernel"), probe(on_b200, "kernel")
    assert l4["status"] == "pass" and "through the fallback CompressedTensorsW4A16Fp4" in l4["detail"]
    assert "CompressedTensorsW4A4Fp4 needs 10.0" in l4["evidence"]["caveat"]
    assert b200["status"] == "pass" and "with CompressedTensorsW4A4Fp4 (needs 10.0)" in b200["detail"]
    assert "caveat" not in b200["evidence"]
    _, dense = check("--model", "google/gemma-4-E4B-it", "--vllm", "0.20.0", "--transformers", "5.5.0")
    assert probe(dense, "kernel")["status"] == "skip" and probe(dense, "kernel")["reason"] is None


# -- driver: the stack's CUDA vs the target's declared driver --------------------------------------------------
LAB = """
[targets.l4-r535]
gpu = "L4"
count = 1
tp = 1
driver = "535.104.05"

[targets.h100-r550]
gpu = "H100-80GB"
count = 1
tp = 1
driver = "550.54.15"

[targets.l4-any]
gpu = "L4"
count = 1
tp = 1

[models]
include = ["google/gemma-4-E4B-it"]

[[stack]]
kind = "vllm"
vllm = ["0.19.1"]
transformers = ["@newest-allowed"]
"""


@pytest.mark.parametrize(
    ("stack", "target", "status", "says"),
    [
        # torch 2.10.0 (CUDA 12.8): the R535 driver runs it through CUDA 12's minor-version compatibility
        (("--vllm", "0.19.1"), "l4-r535", "pass", "runs CUDA 12.8 through minor-version compatibility"),
        # torch 2.11.0 requires cuda-toolkit==13.0.2: CUDA 13 needs R580 at least
        (("--vllm", "0.20.0"), "l4-r535", "fail", "older than the 580.65.06 vllm 0.20.0's CUDA 13.0 needs"),
        # Triton 25.01's notes: 560 or later, R535 from 535.86 on a data-centre GPU (forward compatibility)
        (("--triton", "25.01"), "l4-r535", "pass", "through forward compatibility (R535, data-centre GPU)"),
        # ... but they name no R550: an H100 on 550.54.15 is too old for 25.01
        (("--triton", "25.01"), "h100-r550", "fail", "older than the 560 Triton 25.01's container"),
        (
            ("--vllm", "0.19.1"),
            "l4-any",
            "skip",
            "driver not declared for l4-any: vllm 0.19.1's CUDA 12.8 needs 570.26",
        ),
    ],
)
def test_driver_rung_on_declared_drivers(
    check: CheckFn, tmp_path: Path, stack: tuple[str, ...], target: str, status: str, says: str
) -> None:
    matrix = tmp_path / "lab.toml"
    matrix.write_text(LAB)
    code, res = check("--matrix", str(matrix), "--model", "gemma-4-E4B-it", *stack, "--gpu", target)
    assert code == 0
    driver = probe(res, "driver")
    assert driver["status"] == status, driver["detail"]
    assert driver["reason"] == ("driver-too-old" if status == "fail" else None)
    assert says in driver["detail"] + driver["evidence"].get("caveat", "")
    if status == "fail":
        assert (
            res["verdict"] == "blocked" and driver["evidence"]["driver_source"] == f"{matrix}: targets.{target}.driver"
        )

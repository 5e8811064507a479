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

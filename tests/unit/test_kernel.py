"""The kernel rung's judgement (ladder/kernel.py) over the facts a wheel gives (``Facts.quant_scheme``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from stackmatrix.domain import Cell, Gpu, Outcome, Stack, StackKind, Status, Target
from stackmatrix.ladder.kernel import SCHEMES, UNQUANTIZED, probe_kernel
from stackmatrix.ladder.static import Context
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.matrix.file import Settings

A100 = Gpu("A100-80GB", 80, "8.0", False, False, "s", True)
L4 = Gpu("L4", 24, "8.9", True, False, "s", True)
COST = "Weight-only FP8 compression will be used leveraging the Marlin kernel. This may degrade performance."


def way(
    cls: str, cap: int | None, block: bool = True, chooses: tuple[str, ...] = (), costs: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {"class": cls, "member": f"{cls}.py", "min_capability": cap, "block": block, "chooses": list(chooses),
            "costs": list(costs)}  # fmt: skip


class Facts:
    """The slice of ``Facts`` the rung reads: the wheel, and what its compressed-tensors code does."""

    def __init__(self, ways: list[dict[str, Any]], accepts: bool | None = None) -> None:
        self.read = {"member": "ct.py", "ways": ways, "accepts": accepts, "classes": [w["class"] for w in ways]}

    def wheel(self, project: str, version: str, python: str) -> Any:
        return type("W", (), {"filename": f"{project}-{version}.whl"})()

    def quant_scheme(self, wheel: Any, predicates: tuple[str, ...], strategy: str | None) -> dict[str, Any]:
        return self.read


def cell(quant: str, gpu: Gpu) -> Cell:
    model = replace(load_catalog().model("RedHatAI/gemma-4-31B-it-FP8-block"), quant=quant)
    return Cell(Stack(StackKind.VLLM, "0.16.0", "4.57.6", "3.12"), model, Target("t", gpu, 1, 1))


def judge(quant: str, gpu: Gpu, facts: Facts) -> Outcome:
    return probe_kernel(cell(quant, gpu), Context(load_catalog(), facts, Settings()))  # type: ignore[arg-type]


FP8 = [way("CompressedTensorsW8A8Fp8", 89), way("CompressedTensorsW8A16Fp8", 80, costs=(COST,))]


def test_every_quantization_of_the_model_catalog_has_a_reading() -> None:
    quants = {m.quant for m in load_catalog().models}
    assert quants <= set(SCHEMES) | UNQUANTIZED, quants - set(SCHEMES) - UNQUANTIZED


def test_the_native_class_when_the_gpu_meets_it() -> None:
    out = judge("fp8-dynamic", L4, Facts(FP8))
    assert out.status is Status.PASS and "with CompressedTensorsW8A8Fp8 (needs 8.9)" in out.detail
    assert "caveat" not in out.evidence


def test_a_fallback_is_named_with_what_it_costs() -> None:
    out = judge("fp8-dynamic", A100, Facts(FP8))
    assert out.status is Status.PASS and "through the fallback CompressedTensorsW8A16Fp8" in out.detail
    assert "(CompressedTensorsW8A8Fp8 needs 8.9)" in out.evidence["caveat"] and COST in out.evidence["caveat"]


def test_no_class_the_gpu_meets_fails_naming_the_scheme_and_both_capabilities() -> None:
    block = [way("CompressedTensorsW8A8Fp8", 89), way("CompressedTensorsW8A16Fp8", 80, block=False)]
    out = judge("fp8-block", A100, Facts(block, accepts=True))
    assert out.status is Status.FAIL and str(out.reason) == "kernel-unsupported"
    assert "FP8 W8A8 with block weights (fp8-block) on A100-80GB (8.0)" in out.detail
    assert "CompressedTensorsW8A8Fp8 needs 8.9; CompressedTensorsW8A16Fp8 takes no block weights" in out.detail


def test_a_scheme_the_code_does_not_take_fails() -> None:
    out = judge("fp8-block", L4, Facts(FP8, accepts=False))
    assert out.status is Status.FAIL and "returns no BLOCK weights for it" in out.detail
    assert judge("nvfp4", L4, Facts([])).status is Status.FAIL


def test_a_native_class_without_the_gpus_tensor_cores_says_it_picks_its_kernel_itself() -> None:
    nvfp4 = [way("CompressedTensorsW4A4Fp4", 75, chooses=("select_nvfp4_linear_backend",))]
    out = judge("nvfp4", L4, Facts(nvfp4))
    assert out.status is Status.PASS
    assert "L4 has no FP4 tensor cores" in out.evidence["caveat"] and "select_nvfp4_linear_backend" in out.detail


def test_bf16_weights_have_no_kernel_to_check() -> None:
    out = judge("none", L4, Facts([]))
    assert out.status is Status.SKIP and out.reason is None

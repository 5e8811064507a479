"""compressed-tensors' scheme choice read with ``ast`` (ladder/quantsource.py), on the shapes vLLM's source has
had: the FP8 fallback by capability, NVFP4's CUTLASS-or-Marlin branch, and a branch for another platform."""

from __future__ import annotations

from stackmatrix.ladder import quantsource

CONFIG = """
class CompressedTensorsConfig:
    def _get_scheme_from_parts(self, weight_quant, input_quant, format=None):
        if self._is_nvfp4_format(weight_quant) and input_quant is None:
            return CompressedTensorsW4A16Fp4()
        if self._is_nvfp4_format(weight_quant) and self._is_nvfp4_format(input_quant):
            if cutlass_fp4_supported() or envs.VLLM_USE_NVFP4_CT_EMULATIONS:
                return CompressedTensorsW4A4Fp4()
            else:
                logger.warning_once(
                    "Current platform does not support cutlass NVFP4."
                    " Running CompressedTensorsW4A16Fp4."
                )
                return CompressedTensorsW4A16Fp4(has_input_global_scale=True)
        if self._is_fp8_w8a8(weight_quant, input_quant):
            if current_platform.is_xpu():
                return CompressedTensorsXpuFp8()
            else:
                is_fp8_w8a8_supported = self._check_scheme_supported(
                    CompressedTensorsW8A8Fp8.get_min_capability(), error=False
                )
            if is_fp8_w8a8_supported:
                return CompressedTensorsW8A8Fp8(weight_quant=weight_quant)
            else:
                return CompressedTensorsW8A16Fp8(weight_quant=weight_quant)
        raise NotImplementedError("No compressed-tensors compatible scheme was found.")

    def _is_fp8_w8a8(self, weight_quant, input_quant):
        return weight_quant.strategy in [QuantizationStrategy.TENSOR, QuantizationStrategy.CHANNEL]
"""

SCHEME = """
from vllm.model_executor.layers.quantization.utils.marlin_utils_fp4 import apply_fp4_marlin_linear
from .base import CompressedTensorsScheme

class CompressedTensorsW4A4Fp4(CompressedTensorsScheme):
    def __init__(self):
        self.backend = select_nvfp4_linear_backend()

    @classmethod
    def get_min_capability(cls) -> int:
        if envs.VLLM_USE_NVFP4_CT_EMULATIONS:
            return 80
        return 100
"""


def test_the_branch_of_a_scheme_gives_its_classes_native_first_then_its_fallbacks() -> None:
    fp8 = quantsource.scheme_branch(CONFIG, ("_is_fp8_w8a8",))
    assert fp8["classes"] == ["CompressedTensorsW8A8Fp8", "CompressedTensorsW8A16Fp8"]  # XPU's class left out
    nvfp4 = quantsource.scheme_branch(CONFIG, ("_is_fp4a4_nvfp4", "_is_nvfp4_format"))
    assert nvfp4["classes"] == ["CompressedTensorsW4A4Fp4", "CompressedTensorsW4A16Fp4"]  # weight-only branch skipped
    assert nvfp4["messages"] == ["Current platform does not support cutlass NVFP4. Running CompressedTensorsW4A16Fp4."]
    assert quantsource.scheme_branch(CONFIG, ("_is_mxfp4",))["classes"] == []
    assert quantsource.scheme_branch("x = 1\n", ("_is_fp8_w8a8",))["function"] is None


def test_a_predicate_says_whether_it_takes_a_strategy() -> None:
    assert quantsource.function_mentions(CONFIG, "_is_fp8_w8a8", "BLOCK") is False
    assert quantsource.function_mentions(CONFIG, "_is_fp8_w8a8", "CHANNEL") is True
    assert quantsource.function_mentions(CONFIG, "_is_gone", "BLOCK") is None


def test_a_scheme_class_gives_its_default_minimum_capability_and_how_it_picks_a_kernel() -> None:
    cls = quantsource.scheme_class(SCHEME, "CompressedTensorsW4A4Fp4")
    assert cls is not None
    assert cls["min_capability"] == 100  # the opt-in emulation's 80 is not the default
    assert cls["chooses"] == ["select_nvfp4_linear_backend"] and cls["block"] is False
    assert "vllm.model_executor.layers.quantization.utils.marlin_utils_fp4" in cls["imports"]
    assert quantsource.scheme_class(SCHEME, "Missing") is None


def test_a_cost_is_a_logged_sentence_that_states_one() -> None:
    source = (
        'logger.warning_once("Your GPU does not have native support for FP8 computation but FP8 quantization is '
        'being used. Weight-only FP8 compression will be used leveraging the Marlin kernel. This may degrade "\n'
        '    "performance for compute-heavy workloads.")\nlogger.info(f"Using {backend} for NVFP4 GEMM")\n'
    )
    assert quantsource.costs(source) == [
        "Your GPU does not have native support for FP8 computation but FP8 quantization is being used. Weight-only "
        "FP8 compression will be used leveraging the Marlin kernel. This may degrade performance for compute-heavy "
        "workloads."
    ]
    assert quantsource.relative_imports("from .base import A\nfrom .w8a8 import B as C\n") == {
        "A": ".base",
        "C": ".w8a8",
    }

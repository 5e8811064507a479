"""The ``kernel`` rung: does the stack's vLLM have a kernel for the checkpoint's quantization on the target's GPU?

Read from the vLLM wheel (``quantsource``): the scheme classes compressed-tensors returns for the checkpoint's
format, native first, then its fallbacks (Marlin's weight-only kernels), each with the minimum compute capability
vLLM enforces when it loads the checkpoint. The first class the GPU meets is the one vLLM runs: the native one
passes, a fallback passes and is named (with its cost where vLLM's source logs one), none fails
``kernel-unsupported``. Exact per vLLM version: FP8 block weights on an A100 fail on 0.15.1 (its Marlin class takes
only channel and tensor weights) and run through Marlin on 0.16.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stackmatrix.domain import Cell, Gpu, Outcome, Reason, Rung, Status
from stackmatrix.ladder.static import Context, StaticRung, nvidia_note


@dataclass(frozen=True)
class Scheme:
    """A quantization of the model catalog (``quant``) as vLLM's compressed-tensors code recognises it."""

    title: str
    predicates: tuple[str, ...]  # the ``CompressedTensorsConfig`` methods that recognise it (any one)
    strategy: str | None  # the weight strategy every class on its path must take ("BLOCK"), if any
    cores: str  # the tensor cores its native kernels use: the GPU catalog's flag of that name ("fp8", "fp4")


SCHEMES: dict[str, Scheme] = {
    "fp8-dynamic": Scheme("FP8 W8A8 (dynamic activations)", ("_is_fp8_w8a8",), None, "fp8"),
    "fp8-block": Scheme("FP8 W8A8 with block weights", ("_is_fp8_w8a8",), "BLOCK", "fp8"),
    "nvfp4": Scheme("NVFP4 W4A4", ("_is_fp4a4_nvfp4", "_is_nvfp4_format"), None, "fp4"),
}
# Checkpoints vLLM loads as plain bf16 (QAT "q4_0-unquantized" weights are stored in bf16): no quantized kernel.
UNQUANTIZED = frozenset({"none", "int4-qat"})


def capability(gpu: Gpu) -> int:
    """``"8.9"`` -> 89, as vLLM compares them."""
    major, minor = gpu.compute_capability.split(".")
    return int(major) * 10 + int(minor)


def _cc(value: int | None) -> str:
    return "not readable" if value is None else f"{value // 10}.{value % 10}"


def _usable(way: dict[str, Any], cc: int, scheme: Scheme) -> bool:
    need = way["min_capability"]
    return need is not None and need <= cc and (scheme.strategy is None or way["block"])


def _why_not(way: dict[str, Any], cc: int, scheme: Scheme) -> str:
    need = way["min_capability"]
    if need is None:
        return f"{way['class']}'s minimum capability is not readable"
    if need > cc:
        return f"{way['class']} needs {_cc(need)}"
    return f"{way['class']} takes no {scheme.strategy.lower() if scheme.strategy else ''} weights"


def probe_kernel(cell: Cell, ctx: Context) -> Outcome:
    s, m, gpu = cell.stack, cell.model, cell.target.gpu
    if m.quant in UNQUANTIZED:
        return Outcome(Rung.KERNEL, Status.SKIP, None, f"{m.dtype} weights ({m.quant}): no quantized kernel to check")
    scheme = SCHEMES.get(m.quant)
    if scheme is None:  # the catalog's completeness test keeps this from happening
        return Outcome(Rung.KERNEL, Status.SKIP, Reason.UNKNOWN, f"no reading of quantization {m.quant!r}")
    if s.vllm is None:
        return Outcome(Rung.KERNEL, Status.SKIP, None, "vLLM version not known")
    vw = ctx.facts.wheel("vllm", s.vllm, s.python)
    read = ctx.facts.quant_scheme(vw, scheme.predicates, scheme.strategy)
    cc = capability(gpu)
    evidence = {"wheel": vw.filename, "scheme": m.quant, "gpu": gpu.name, "capability": gpu.compute_capability, **read}
    on = f"{scheme.title} ({m.quant}) on {gpu.name} ({gpu.compute_capability})"
    note = nvidia_note(cell, ctx)
    if not read["ways"] or read["accepts"] is False:
        where = read["member"] or "compressed_tensors.py"
        what = "a class" if read["accepts"] is not False else f"{scheme.strategy} weights"
        detail = f"vllm {s.vllm} has no kernel for {on}: its {where} returns no {what} for it{note}"
        return Outcome(Rung.KERNEL, Status.FAIL, Reason.KERNEL_UNSUPPORTED, detail, evidence)
    ways = read["ways"]
    chosen = next((i for i, w in enumerate(ways) if _usable(w, cc, scheme)), None)
    if chosen is None:
        needs = "; ".join(_why_not(w, cc, scheme) for w in ways)
        detail = f"vllm {s.vllm} has no kernel for {on}: {needs}{note}"
        return Outcome(Rung.KERNEL, Status.FAIL, Reason.KERNEL_UNSUPPORTED, detail, evidence)
    way = ways[chosen]
    if chosen:
        skipped = "; ".join(_why_not(w, cc, scheme) for w in ways[:chosen])
        cost = f': "{way["costs"][0]}"' if way["costs"] else ""
        caveat = f"{scheme.title} runs on {gpu.name} through the fallback {way['class']} ({skipped}){cost}"
        detail = f"vllm {s.vllm} runs {on} through the fallback {way['class']} ({skipped}){cost}{note}"
        return Outcome(Rung.KERNEL, Status.PASS, None, detail, {**evidence, "caveat": caveat})
    detail = f"vllm {s.vllm} runs {on} with {way['class']} (needs {_cc(way['min_capability'])}){note}"
    if not getattr(gpu, scheme.cores) and way["chooses"]:  # no such tensor cores: the class picks a kernel itself
        caveat = (
            f"{gpu.name} has no {scheme.cores.upper()} tensor cores (the GPU catalog): {way['class']} chooses a "
            f"non-native kernel when it loads ({', '.join(way['chooses'])})"
            + (f': "{way["costs"][0]}"' if way["costs"] else "")
        )
        return Outcome(Rung.KERNEL, Status.PASS, None, f"{detail}; {caveat}", {**evidence, "caveat": caveat})
    return Outcome(Rung.KERNEL, Status.PASS, None, detail, evidence)


# the stack (its vLLM wheel, and nvidia_note's stock container), the checkpoint's scheme, the GPU
KERNEL = StaticRung(Rung.KERNEL, probe_kernel, lambda c: (c.stack.id, c.model.quant, c.target.gpu))

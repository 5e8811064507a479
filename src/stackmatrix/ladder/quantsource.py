"""What vLLM's compressed-tensors code does with a quantized checkpoint, read with :mod:`ast` (never imported).

vLLM picks a scheme class in ``CompressedTensorsConfig._get_scheme_from_parts`` (a branch per weight/activation
format, with a fallback class where the GPU lacks the native one) and then refuses a class whose
``get_min_capability()`` is above the GPU's ("Quantization scheme is not supported for the current GPU. Min
capability: ..."). These extractors read that branch and those classes from a wheel's source: JSON-able facts the
reader caches per wheel.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from typing import Any

from stackmatrix.ladder.pysource import _parse

SCHEME_FUNCTION = "_get_scheme_from_parts"
# Platform checks whose branch is not CUDA's: what they return is not what an NVIDIA GPU gets.
_OTHER_PLATFORMS = frozenset({"is_xpu", "is_rocm", "is_cpu", "is_tpu", "is_hpu", "is_neuron"})
# Words of a log message that states a fallback's cost ("... This may degrade performance for ...").
_COST_WORDS = ("degrade", "performance", "slower")


def _called(node: ast.AST) -> list[str]:
    """Names of the functions and methods ``node`` calls."""
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            out.append(f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else "")
    return out


def _input_absent(test: ast.expr) -> bool:
    """``input_quant is None``: a weight-only checkpoint's branch (the schemes here quantize activations too)."""
    return any(
        isinstance(n, ast.Compare)
        and ast.unparse(n.left) == "input_quant"
        and any(isinstance(op, ast.Is) for op in n.ops)
        and any(isinstance(c, ast.Constant) and c.value is None for c in n.comparators)
        for n in ast.walk(test)
    )


def _not_cuda(test: ast.expr) -> bool:
    return _input_absent(test) or bool(_OTHER_PLATFORMS & set(_called(test)))


def _function(tree: ast.AST, name: str) -> ast.FunctionDef | None:
    return next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name), None)


def _statements(body: Sequence[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement of ``body`` in source order, nested blocks included."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(node, field, []) or [])
        for handler in getattr(node, "handlers", []) or []:
            yield from _statements(handler.body)


def _returned_classes(body: Sequence[ast.stmt]) -> list[str]:
    """The classes ``body`` returns instances of, in source order, leaving out the branches another platform or a
    weight-only checkpoint takes."""
    out: list[str] = []
    for node in body:
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
            out.append(node.value.func.id)
        elif isinstance(node, ast.If):
            if not _not_cuda(node.test):
                out += _returned_classes(node.body)
            out += _returned_classes(node.orelse)
        else:
            for field in ("body", "orelse", "finalbody"):
                out += _returned_classes(getattr(node, field, []) or [])
    return list(dict.fromkeys(out))


def _matches(test: ast.expr, predicates: Sequence[str]) -> bool:
    return bool(set(predicates) & set(_called(test))) and not _not_cuda(test)


def scheme_branch(source: str, predicates: Sequence[str]) -> dict[str, Any]:
    """The scheme classes ``_get_scheme_from_parts`` returns, in order, in the first branch whose test calls one
    of ``predicates`` (the native class first, then its fallbacks), and the messages that branch logs."""
    fn = _function(_parse(source), SCHEME_FUNCTION)
    if fn is None:
        return {"function": None, "classes": [], "test": None, "messages": []}
    for node in _statements(fn.body):
        if isinstance(node, ast.If) and _matches(node.test, predicates):
            return {
                "function": SCHEME_FUNCTION,
                "classes": _returned_classes(node.body),
                "test": ast.unparse(node.test),
                "messages": _messages(node),
            }
    return {"function": SCHEME_FUNCTION, "classes": [], "test": None, "messages": []}


def function_mentions(source: str, function: str, word: str) -> bool | None:
    """Whether ``function``'s source names ``word`` (``_is_fp8_w8a8`` and ``BLOCK``); None without it."""
    fn = _function(_parse(source), function)
    return None if fn is None else word in ast.unparse(fn)


def _min_capability(cls: ast.ClassDef) -> int | None:
    """``get_min_capability``'s default: its last top-level ``return <int>`` (earlier returns sit under
    opt-in switches such as ``VLLM_USE_NVFP4_CT_EMULATIONS``)."""
    fn = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "get_min_capability"), None)
    if fn is None:
        return None
    returns = [n for n in fn.body if isinstance(n, ast.Return)]
    value = returns[-1].value if returns else None
    return value.value if isinstance(value, ast.Constant) and isinstance(value.value, int) else None


def _text(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # an f-string: its literal parts, the fields as "…"
        return "".join(_text(v) if isinstance(v, ast.Constant) else "…" for v in node.values)
    return ""


def _messages(tree: ast.AST) -> list[str]:
    """The literal texts ``tree`` logs or warns with (``logger.warning_once("...")``)."""
    out = []
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.args):
            continue
        if n.func.attr.startswith(("warning", "warn", "info")) and (text := _text(n.args[0])):
            out.append(" ".join(text.split()))
    return list(dict.fromkeys(out))


def costs(source: str) -> list[str]:
    """The messages of a module that state a cost ("... may degrade performance ...")."""
    return [m for m in _messages(_parse(source)) if any(w in m.lower() for w in _COST_WORDS)]


def scheme_class(source: str, name: str) -> dict[str, Any] | None:
    """A scheme class: its minimum capability, whether its module handles block weights, the functions its methods
    call to choose a kernel at load time, and the modules it imports (where a fallback's cost is logged)."""
    tree = _parse(source)
    cls = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        return None
    chooses = sorted(
        {c for c in _called(cls) if c.startswith(("select_", "init_")) and ("kernel" in c or "backend" in c)}
    )
    imports = sorted({n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module})
    return {
        "min_capability": _min_capability(cls),
        # the strategies its module names: block weights are handled where the module names BLOCK (a class that
        # takes only CHANNEL and TENSOR raises "Unsupported weight strategy" on a block checkpoint)
        "block": "BLOCK" in source,
        "chooses": chooses,
        "imports": imports,
        "costs": costs(source),
    }


def relative_imports(source: str) -> dict[str, str]:
    """``from .mod import Name`` in a package's ``__init__``: Name -> ``.mod``."""
    out = {}
    for n in _parse(source).body:
        if isinstance(n, ast.ImportFrom) and n.level and n.module:
            for a in n.names:
                out[a.asname or a.name] = "." * n.level + n.module
    return out

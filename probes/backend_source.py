"""What a Triton vLLM backend's source imports and calls, read with :mod:`ast` (stdlib only, never imported).

Shared by ``backend_imports.py`` (inside an image) and the host, which reads the same source from a registry's
layers (``stackmatrix.registry``) and loads this file by path.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

# Provided by the Python backend's stub at run time, not importable on its own.
PROVIDED = {"triton_python_backend_utils"}


def collect(sources: dict[str, str]) -> dict[str, Any]:
    """Every absolute import (module level and inside functions) that is not the backend's own or the
    standard library's, and every call whose callee is reached through an imported vLLM name."""
    local = {name.split("/")[0].removesuffix(".py") for name in sources}
    imports: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    where: dict[str, str] = {}
    for name, text in sources.items():
        tree = ast.parse(text, name)
        bound: dict[str, str] = {}  # local name -> dotted path of what it is
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top = node.module.split(".")[0]
                if top in local or top in PROVIDED or top in sys.stdlib_module_names:
                    continue
                imports.setdefault(node.module, set()).update(a.name for a in node.names if a.name != "*")
                where.setdefault(node.module, f"{name}:{node.lineno}")
                for a in node.names:
                    bound[a.asname or a.name] = f"{node.module}:{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    top = a.name.split(".")[0]
                    if top in local or top in PROVIDED or top in sys.stdlib_module_names:
                        continue
                    imports.setdefault(a.name, set())
                    where.setdefault(a.name, f"{name}:{node.lineno}")
                    bound[a.asname or top] = f"{a.name if a.asname else top}:"
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            chain: list[str] = []
            func: ast.expr = node.func
            while isinstance(func, ast.Attribute):
                chain.insert(0, func.attr)
                func = func.value
            if not isinstance(func, ast.Name) or func.id not in bound:
                continue
            module, _, attr = bound[func.id].partition(":")
            if not module.startswith("vllm"):
                continue
            target = f"{module}:{'.'.join(([attr] if attr else []) + chain)}"
            if target.endswith(":"):
                continue
            keywords = {k.arg for k in node.keywords if k.arg}
            calls.setdefault(target, set()).update(keywords)
    return {
        "imports": {m: sorted(n) for m, n in sorted(imports.items())},
        "calls": {t: sorted(k) for t, k in sorted(calls.items())},
        "where": where,
    }

"""Facts read from Python source with :mod:`ast` (never imported: the host does not import vLLM).

Each extractor turns one module's source into JSON-able facts, cached per wheel by the reader. Every parse takes
one lock: the static tier reads wheels in threads, and CPython 3.11's ``ast.parse`` is not safe from two threads
at once (a race raises ``SystemError: AST constructor recursion depth mismatch``, CPython gh-106905; seen here
under pytest-xdist).
"""

from __future__ import annotations

import ast
import threading
from typing import Any

_PARSING = threading.Lock()


def _parse(source: str) -> ast.Module:
    with _PARSING:
        return ast.parse(source)


def _str_keys(node: ast.expr) -> list[str]:
    """String keys of a dict literal, ``OrderedDict([(k, v), ...])`` or ``OrderedDict(**{...}, **other)``."""
    if isinstance(node, ast.Dict):
        return [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    if not isinstance(node, ast.Call):
        return []
    out: list[str] = []
    if node.args and isinstance(node.args[0], ast.List | ast.Tuple):
        for elt in node.args[0].elts:
            if isinstance(elt, ast.Tuple) and elt.elts and isinstance(elt.elts[0], ast.Constant):
                value = elt.elts[0].value
                if isinstance(value, str):
                    out.append(value)
    for kw in node.keywords:
        out += _str_keys(kw.value) if kw.arg is None else [kw.arg]  # ``**{...}`` merges a literal
    return out


def mapping_keys(source: str, name: str) -> tuple[list[str], str | None]:
    """Keys a module gives the mapping ``name``: its literal assignments and ``name.update({...})`` calls,
    plus where the module imports ``name`` from (``"..pkg.mod"``, leading dots for relative imports)."""
    keys: list[str] = []
    origin: str | None = None
    for node in _walk_top(_parse(source).body):
        target, value = _assignment(node)
        if target == name and value is not None:
            keys += _str_keys(value)
        elif (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr == "update"
            and isinstance(node.value.func.value, ast.Name)
            and node.value.func.value.id == name
            and node.value.args
        ):
            keys += _str_keys(node.value.args[0])
        elif isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            origin = "." * node.level + (node.module or "")
    return keys, origin


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def vllm_registry(source: str) -> dict[str, list[str]]:
    """Architecture -> [module, class] from vLLM's model registry (every ``_*_MODELS`` dict literal)."""
    arches: dict[str, list[str]] = {}
    for node in _parse(source).body:
        target, value = _assignment(node)
        if not target or not target.endswith("_MODELS") or not isinstance(value, ast.Dict):
            continue
        for k, v in zip(value.keys, value.values, strict=True):
            if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
                continue
            entry = [e.value for e in v.elts if isinstance(e, ast.Constant)] if isinstance(v, ast.Tuple) else []
            arches[k.value] = [str(e) for e in entry]
    return arches


def _walk_top(body: list[ast.stmt]) -> list[ast.stmt]:
    """Top-level statements, including those under ``if``/``try`` (TYPE_CHECKING, version guards)."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += _walk_top(node.body) + _walk_top(node.orelse)
        elif isinstance(node, ast.Try):
            out += _walk_top(node.body) + _walk_top(node.orelse) + _walk_top(node.finalbody)
            for h in node.handlers:
                out += _walk_top(h.body)
    return out


def module_symbols(source: str) -> dict[str, Any]:
    """Names a module defines or re-exports at top level, whether it has a lazy ``__getattr__``,
    and the string constants a lazy module could map (``{"Name": "module"}`` tables)."""
    tree = _parse(source)
    names: set[str] = set()
    lazy = False
    for node in _walk_top(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            lazy = lazy or node.name == "__getattr__"
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names.add(n.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
    strings = (
        sorted(
            {
                n.value
                for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.isidentifier()
            }
        )
        if lazy
        else []
    )
    return {"names": sorted(names), "lazy": lazy, "lazy_strings": strings}


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, Any]:
    a = fn.args
    return {
        "params": [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs],
        "var_keyword": a.kwarg is not None,
    }


def _class_fields(cls: ast.ClassDef) -> list[str]:
    return [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def callable_signature(source: str, qualname: str) -> dict[str, Any] | None:
    """Parameters of ``qualname`` (a function, a method, or a class) in this module.

    For a class: its ``__init__`` when it defines one, else its dataclass fields plus ``bases`` (names the
    caller resolves in other modules). None when the module does not define ``qualname``.
    """
    scope: list[ast.stmt] = _parse(source).body
    parts = qualname.split(".")
    node: ast.stmt | None = None
    for i, part in enumerate(parts):
        node = next(
            (
                n
                for n in _walk_top(scope)
                if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and n.name == part
            ),
            None,
        )
        if node is None:
            return None
        if isinstance(node, ast.ClassDef) and i < len(parts) - 1:
            scope = node.body
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return {"kind": "function", **_params(node)}
    assert isinstance(node, ast.ClassDef)
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    bases = [ast.unparse(b) for b in node.bases]
    if init is not None:
        return {"kind": "class-init", **_params(init), "bases": bases}
    return {"kind": "dataclass", "params": _class_fields(node), "var_keyword": False, "bases": bases}


def import_origin(source: str, name: str) -> str | None:
    """The module ``name`` is imported from at top level (``from X import name``), if any."""
    for node in _walk_top(_parse(source).body):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return f"{node.module}:{alias.name}"
    return None

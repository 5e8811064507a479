"""Rung ``backend-imports`` read from an image: parse the Triton vLLM backend's own source where the image keeps it
(``/opt/tritonserver/backends/vllm``: ``model.py`` and ``utils/``), then import everything it imports (vLLM and
the libraries beside it) and check the keywords of every call it makes into vLLM, against what the image holds.
Runs INSIDE the image under test (stdlib + the stack). ``"mode": "parse"`` only reads the source and returns what
it imports and calls (the host then checks a replacement vLLM's wheel against it).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import ProbeFailure, main
from backend_source import collect

DEFAULT_DIR = "/opt/tritonserver/backends/vllm"


def _sources(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*.py") if not {"test", "tests"} & set(p.relative_to(root).parts))
    return {str(p.relative_to(root)): p.read_text(errors="replace") for p in files}


def _resolve(target: str) -> Any:
    module, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def check(found: dict[str, Any], extra_calls: list[list[Any]]) -> tuple[list[dict[str, Any]], int]:
    problems: list[dict[str, Any]] = []
    checked = 0
    for module, names in found["imports"].items():
        checked += 1
        try:
            mod = importlib.import_module(module)
        except Exception as exc:
            missing = isinstance(exc, ModuleNotFoundError) and exc.name is not None and module.startswith(exc.name)
            problems.append(
                {
                    # absent, or present and failing (an ABI or operator mismatch in the image)
                    "reason": "backend-import-missing" if missing else "import-error",
                    "module": module,
                    "where": found["where"].get(module),
                    "detail": f"no module {module}" if missing else f"import {module}: {type(exc).__name__}: {exc}",
                }
            )
            continue
        for name in names:
            checked += 1
            if hasattr(mod, name):
                continue
            try:  # `from pkg import submodule`
                importlib.import_module(f"{module}.{name}")
            except Exception:
                problems.append(
                    {
                        "reason": "backend-import-missing",
                        "module": module,
                        "name": name,
                        "where": found["where"].get(module),
                        "detail": f"{module} has no {name}",
                    }
                )
    for target, keywords in [*found["calls"].items(), *((t, k) for t, k in extra_calls)]:
        if not keywords:
            continue
        checked += 1
        try:
            params = inspect.signature(_resolve(target)).parameters
        except Exception as exc:  # missing (already reported as an import) or not introspectable
            if not isinstance(exc, (AttributeError, ImportError)):
                continue
            problems.append(
                {
                    "reason": "backend-import-missing",
                    "callable": target,
                    "detail": f"no {target.replace(':', '.')}",
                }
            )
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        missing = [k for k in keywords if k not in params]
        if missing:
            problems.append(
                {
                    "reason": "backend-signature-mismatch",
                    "callable": target,
                    "missing_keywords": missing,
                    "detail": f"{target.replace(':', '.')} takes no {', '.join(missing)}",
                }
            )
    return problems, checked


def run(args: dict[str, Any]) -> dict[str, Any]:
    root = Path(args.get("dir", DEFAULT_DIR))
    if not (root / "model.py").is_file():
        raise ProbeFailure("unknown", f"no vLLM backend source at {root} in this image", dir=str(root))
    sources = _sources(root)
    digest = hashlib.sha256("".join(f"{n}\0{t}" for n, t in sources.items()).encode()).hexdigest()[:16]
    found = collect(sources)
    evidence: dict[str, Any] = {"dir": str(root), "files": sorted(sources), "source_sha256": digest, **found}
    if args.get("mode") == "parse":
        return {"detail": f"read {len(sources)} files of the backend at {root}", "evidence": evidence}
    problems, checked = check(found, args.get("extra_calls", []))
    vllm = sys.modules.get("vllm")
    evidence["vllm"] = str(getattr(vllm, "__version__", None))
    evidence.update({"problems": problems, "checked": checked})
    return {"detail": f"checked {checked} imports and call keywords of the backend at {root}", "evidence": evidence}


if __name__ == "__main__":
    main(run)

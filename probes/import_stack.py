"""Rung ``import``: the stack imports (catches operator/ABI mismatches such as a CUDA torchvision beside a
+cpu torch) and reports the versions it actually runs. Runs INSIDE the environment under test."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import ProbeFailure, main


def run(args: dict[str, Any]) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for name in args.get("modules", ["torch", "transformers", "vllm"]):
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ProbeFailure(
                "import-error", f"import {name} failed: {type(exc).__name__}: {exc}", module=name, versions=versions
            ) from exc
        versions[name] = str(getattr(module, "__version__", "?"))
    for name in args.get("submodules", []):  # deeper imports the engine needs for this model
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ProbeFailure(
                "import-error", f"import {name} failed: {type(exc).__name__}: {exc}", module=name, versions=versions
            ) from exc
    return {
        "detail": "imports " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "evidence": {"versions": versions, "python": sys.version.split()[0]},
    }


if __name__ == "__main__":
    main(run)

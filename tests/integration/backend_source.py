"""A vLLM backend source tree written from one of the catalog's import sets, for images that must carry one.

The real backend (triton-inference-server/vllm_backend) ships only inside NVIDIA's Triton images, which no registry
reachable here serves; the catalog records what each release's backend imports and calls (FACTS §2), so a tree with
exactly those imports and calls, split like the real one (``model.py`` importing its own ``utils``), is what a
test image carries at ``/opt/tritonserver/backends/vllm``.
"""

from __future__ import annotations

from pathlib import Path

from stackmatrix.domain import ImportSet


def write_backend(root: Path, iset: ImportSet, extern: tuple[str, ...]) -> Path:
    (root / "utils").mkdir(parents=True, exist_ok=True)
    heads: dict[str, set[str]] = {}
    for imp in iset.imports:
        heads.setdefault(imp.module, set()).update(imp.names)
    body = []
    for call in iset.calls:
        module, qualname = call.target.split(":", 1)
        heads.setdefault(module, set()).add(qualname.split(".")[0])
        body.append(f"    return {qualname}({', '.join(f'{k}=None' for k in call.keywords)})")
    lines = [f"import {m}" for m in extern]
    lines += [f"from {m} import {', '.join(sorted(n))}" for m, n in heads.items()]
    (root / "utils" / "__init__.py").write_text("")
    (root / "utils" / "engine.py").write_text("\n".join([*lines, "", "", "def build():", *body, "    return None", ""]))
    (root / "model.py").write_text(
        "import json\n\nimport triton_python_backend_utils as pb_utils\n\nfrom utils.engine import build\n"
    )
    return root

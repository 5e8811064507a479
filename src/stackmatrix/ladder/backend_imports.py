"""The ``backend-imports`` rung: does Triton's vLLM backend import what the cell's vLLM provides? Read, in order,
from the release's image when it is here (the docker runner's hook), from its registry, else from the catalog's
import sets against the public wheel."""

from __future__ import annotations

from typing import Any

from stackmatrix.domain import Cell, Outcome, Reason, Rung, Status
from stackmatrix.ladder.backend_registry import from_registry
from stackmatrix.ladder.static import (
    Context,
    StaticRung,
    backend_outcome,
    catalog_source,
    nvidia_note,
    unknown_backend,
    wheel_problems,
)


def probe_backend_imports(cell: Cell, ctx: Context) -> Outcome:
    s = cell.stack
    rel = ctx.catalog.triton[s.triton or ""]
    if ctx.backend_image is not None:  # the image's own backend source, when the image is here
        from_image = ctx.backend_image(cell, ctx)
        if from_image is not None:
            return from_image
    if rel.image is not None and rel.image.backend_files:  # read from the registry
        return from_registry(cell, ctx, rel)
    src = catalog_source(cell, ctx)
    if src is None:
        reason, why = unknown_backend(rel)
        return Outcome(
            Rung.BACKEND_IMPORTS,
            Status.SKIP,
            reason,
            f"the vLLM backend source of Triton {rel.release} is not in the catalog and {why}",
        )
    if s.vllm is None:
        return Outcome(Rung.BACKEND_IMPORTS, Status.SKIP, Reason.UNKNOWN, "vLLM version not known")
    problems, checked, wheel = wheel_problems(cell, ctx, src)
    evidence: dict[str, Any] = {"wheel": wheel, "import_set": src.name, "source": src.source, "inferred": src.inferred}
    note = nvidia_note(cell, ctx)
    # The docker runner looked for the image and it is not here: say where the import set came from.
    absent = " (the catalog's import set: no Triton image of this release here)" if ctx.backend_image else ""
    if problems and note:
        # The stock container runs NVIDIA's build, not this public wheel: a gap here may be a patch there.
        reason, why = unknown_backend(rel)
        return Outcome(
            Rung.BACKEND_IMPORTS,
            Status.SKIP,
            reason,
            f"Triton {rel.release} backend vs the public vllm {s.vllm}: {problems[0]['detail']}; "
            f"unproven for the container's NVIDIA build {rel.vllm_shipped}: {why}{absent}",
            {**evidence, "checked": checked, "problems": problems},
        )
    return backend_outcome(
        f"Triton {rel.release} backend", f"vllm {s.vllm}", problems, checked, evidence, note + absent
    )


BACKEND_IMPORTS = StaticRung(Rung.BACKEND_IMPORTS, probe_backend_imports, lambda c: (c.stack.id, c.target.tp > 1))

"""``backend-imports`` from the image (docker runner): the Triton vLLM backend's own source, read where the image
keeps it, instead of the catalog's import set (only the fallback, and unknown for 26.04+: FACTS §8).

A cell with the image's own vLLM imports what the backend imports in the Triton image, against NVIDIA's build; a
cell with vLLM replaced has the source parsed there and checked against the replacement's wheel (read, not
installed). An image not on this host is not pulled: the catalog decides, and the outcome says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackmatrix.domain import Cell, Outcome, Reason, Rung, Status
from stackmatrix.ladder.runtime import ProbeRun, run_probe, to_outcome
from stackmatrix.ladder.static import (
    BackendSource,
    Context,
    backend_outcome,
    engine_args_call,
    parsed_backend,
    wheel_problems,
)
from stackmatrix.runners.images import VLLM_VARIANT, TritonImages

if TYPE_CHECKING:
    from stackmatrix.options import Settings

TIMEOUT = 300.0


def present(client: Any, ref: str) -> str | None:
    """The image id when ``ref`` is on this host; None otherwise (never pulled from here)."""
    import docker.errors

    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


class BackendFromImage:
    """The static Context's ``backend_image`` hook, for a runner that runs containers: ``backend-imports`` reads
    the Triton image when it is here (never pulled by a static run)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> BackendFromImage:
        from stackmatrix.runners.docker import client

        return cls(TritonImages(settings.triton_image), client(), settings.cache_dir / "logs")

    def __init__(self, images: TritonImages, client: Any, logs: Path) -> None:
        self.images, self.client, self.logs = images, client, logs

    def __call__(self, cell: Cell, ctx: Context) -> Outcome | None:
        release = cell.stack.triton or ""
        ref = self.images.ref(release, VLLM_VARIANT)
        image_id = present(self.client, ref)
        if image_id is None:
            return None
        t0 = time.perf_counter()
        # vLLM as the image ships it (a stock cell, or only transformers replaced): import there, against it.
        stock = cell.stack.transformers_rule is not None or cell.stack.vllm == ctx.catalog.triton[release].vllm_public
        from stackmatrix.runners.docker import image_env

        env = image_env(ref, image_id)
        args: dict[str, Any] = {"mode": "check" if stock else "parse"}
        if stock:
            target, keys = engine_args_call(cell, ctx)
            args["extra_calls"] = [[target, list(keys)]]
        log = self.logs / "backend-imports" / f"{cell.stack.id}-tp{cell.target.tp}.log"
        run = run_probe(env, "backend_imports.py", args, TIMEOUT, log)
        res = run.result or {}
        if res.get("status") != "pass":
            return _failed(run, ref, t0)
        ev = res["evidence"]
        evidence = {
            "image": ref,
            "image_id": image_id,
            "dir": ev["dir"],
            "files": ev["files"],
            "source_sha256": ev["source_sha256"],
            "imports": ev["imports"],
        }
        what = f"the vLLM backend in {ref}"
        if stock:
            evidence["vllm"] = ev["vllm"]  # the version the image really holds (NVIDIA's build, say)
            out = backend_outcome(what, f"its vllm {ev['vllm']}", ev["problems"], ev["checked"], evidence)
        else:
            src = parsed_source(ev, ref)
            problems, checked, wheel = wheel_problems(cell, ctx, src)
            out = backend_outcome(what, f"vllm {cell.stack.vllm}", problems, checked, {**evidence, "wheel": wheel})
        return Outcome(
            out.probe, out.status, out.reason, out.detail, out.evidence, time.perf_counter() - t0, out.override
        )


def parsed_source(evidence: dict[str, Any], ref: str) -> BackendSource:
    """The probe's parse of the backend as an import set."""
    return parsed_backend(f"image {ref}", evidence, f"{evidence['dir']} in {ref} (sha256 {evidence['source_sha256']})")


def _failed(run: ProbeRun, ref: str, t0: float) -> Outcome:
    """The probe could not read or import the backend at all (no source there, or no Python): not-run."""
    out = to_outcome(Rung.BACKEND_IMPORTS, run)
    return Outcome(
        Rung.BACKEND_IMPORTS,
        Status.ERROR,
        Reason.UNKNOWN,
        f"could not read the vLLM backend in {ref}: {out.detail}",
        {**out.evidence, "image": ref, "probe": json.dumps(run.result)[:2000] if run.result else None},
        time.perf_counter() - t0,
    )

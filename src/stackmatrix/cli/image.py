"""``image facts REF``: what an image holds, read from its registry: the versions it ships (and the file and layer
each was read from), its Triton vLLM backend's imports and calls, and what reading it cost."""

from __future__ import annotations

import json
from typing import Any

from stackmatrix.inert import term_text
from stackmatrix.pipeline.session import open_session
from stackmatrix.registry.image import BACKEND_DIR, DISTS, ImageFacts, parse_backend
from stackmatrix.registry.reference import parse_ref
from stackmatrix.reports.formats import renderer
from stackmatrix.request import Request


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def facts_json(facts: ImageFacts) -> dict[str, Any]:
    backend = parse_backend(facts.backend_files) if facts.backend_files else None
    return {
        "ref": facts.ref,
        "digest": facts.digest,
        "config": facts.config,
        "layers": facts.layers,
        "size": facts.size,
        "shipped": {s.name: {"version": s.version, "file": s.path, "layer": s.layer} for s in facts.shipped},
        "backend": None
        if backend is None
        else {
            "dir": f"/{BACKEND_DIR}",
            "layer": facts.backend_layer,
            "files": [n for n, _ in facts.backend_files],
            "source_sha256": facts.backend_sha256,
            "imports": backend["imports"],
            "calls": backend["calls"],
        },
        "vllm_modules_read": [n for n, _ in facts.vllm_modules],
        "layers_read": [{"digest": d, "bytes": b, "to_end": e} for d, b, e in facts.layers_read],
        "learnt_bytes": facts.learnt_bytes,
        "bytes_read": facts.bytes_read,
        "requests": facts.requests,
    }


def render_json(facts: ImageFacts) -> str:
    return json.dumps(facts_json(facts), indent=1) + "\n"


def render_table(facts: ImageFacts) -> str:
    """The text an image may carry (a path, a version) is made inert for the terminal."""
    lines = [facts.ref, f"  digest        {facts.digest} (linux/amd64), {facts.layers} layers, {_mb(facts.size)}"]
    for name in DISTS:
        s = facts.where(name)
        lines.append(f"  {name:<13} " + (f"{s.version}   {s.path} (layer {s.layer[:19]})" if s else "not found"))
    if facts.backend_files:
        found = parse_backend(facts.backend_files)
        lines.append(
            f"  backend       /{BACKEND_DIR}: {len(facts.backend_files)} files, sha256 {facts.backend_sha256} "
            f"(layer {(facts.backend_layer or '')[:19]})"
        )
        for module, names in found["imports"].items():
            lines.append(f"    import      {module}" + (f": {', '.join(names)}" if names else ""))
        for target, keywords in found["calls"].items():
            lines.append(f"    call        {target}({', '.join(keywords)})")
    else:
        lines.append(f"  backend       no /{BACKEND_DIR} in this image")
    if facts.vllm_modules:
        lines.append(f"  vllm source   {len(facts.vllm_modules)} of its modules read from the image")
    share = 100 * facts.learnt_bytes / facts.size if facts.size else 0.0
    lines.append(
        f"  learnt from   {_mb(facts.learnt_bytes)} of {_mb(facts.size)} ({share:.2f} %), "
        f"{len(facts.layers_read)} of {facts.layers} layers"
    )
    lines.append(
        f"  this read     {_mb(facts.bytes_read)} in {facts.requests} requests"
        + (" (everything from the cache)" if facts.requests == 0 else "")
    )
    return term_text("\n".join(lines)) + "\n"


def cmd_image(request: Request) -> int:
    settings = request.settings()
    ref = parse_ref(request.ref, "image facts", "REF")
    session = open_session(settings)
    try:
        facts = session.images().facts(ref)
    finally:
        session.close()
    print(renderer("image", request.format)(facts), end="")
    return 0

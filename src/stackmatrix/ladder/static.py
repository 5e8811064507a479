"""The static tier: resolve, model-type, arch, backend-imports, fit. No install, no GPU: published wheels only."""

from __future__ import annotations

import difflib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from stackmatrix.catalog import Catalog
from stackmatrix.domain import Cell, Outcome, Reason, StackKind, Status
from stackmatrix.errors import InfraUnavailable
from stackmatrix.ladder.facts import Facts, module_member
from stackmatrix.ladder.uvresolve import uv_resolve
from stackmatrix.matrixfile import Settings as MatrixSettings
from stackmatrix.options import Settings
from stackmatrix.redact import redact, redact_obj
from stackmatrix.wheels.index import VersionNotFound

GIB = 1024**3
# Top-level modules the backend imports from vLLM's dependencies -> the distribution that provides them.
EXTERN_DISTS = {"torch": "torch", "numpy": "numpy", "PIL": "pillow"}


@dataclass(frozen=True)
class Context:
    catalog: Catalog
    facts: Facts
    settings: MatrixSettings
    resolve: str = "declared"  # or "full": uv resolves the whole tree
    options: Settings | None = None  # index, cache and offline settings uv needs for "full"
    # Outcomes keyed by what each probe depends on: thousands of cells share a few hundred distinct checks.
    memo: dict[tuple[object, ...], Outcome] = field(default_factory=dict)


def _closest(name: str, known: list[str]) -> list[str]:
    """Near names as evidence (same 4-letter stem first: difflib over all of a registry is slow)."""
    stem = [k for k in known if k[:4].lower() == name[:4].lower()]
    return difflib.get_close_matches(name, stem or known, n=3)


def _timed(name: str, fn: Callable[[], Outcome]) -> Outcome:
    """Run a probe; a missing release, an unreachable index or an unreadable artifact becomes an outcome
    (never a crash of the whole run), and nothing secret reaches its detail or evidence."""
    t0 = time.perf_counter()
    try:
        out = fn()
    except VersionNotFound as exc:
        out = Outcome(
            name,
            Status.FAIL,
            Reason.VERSION_NOT_FOUND,
            str(exc),
            {"project": exc.project, "version": exc.version, "newest": exc.known[-5:]},
        )
    except InfraUnavailable as exc:
        out = Outcome(name, Status.ERROR, Reason.INDEX_UNREACHABLE, str(exc))
    except Exception as exc:  # a wheel we cannot read: say so on this cell, with the traceback as evidence
        tb = traceback.format_exception(exc)[-6:]
        out = Outcome(name, Status.ERROR, Reason.UNKNOWN, f"{type(exc).__name__}: {exc}", {"traceback": tb})
    return Outcome(
        out.probe,
        out.status,
        out.reason,
        redact(out.detail),
        redact_obj(out.evidence),
        time.perf_counter() - t0,
        out.override,
    )


def _nvidia_note(cell: Cell, ctx: Context) -> str:
    if cell.stack.kind is StackKind.TRITON_VLLM and cell.stack.transformers_rule:
        rel = ctx.catalog.triton[cell.stack.triton or ""]
        if rel.vllm_shipped and rel.vllm_shipped != rel.vllm_public:
            return f" (container ships {rel.vllm_shipped}; read from the public {rel.vllm_public} wheel)"
    return ""


# -- resolve ---------------------------------------------------------------------------------------
def probe_resolve(cell: Cell, ctx: Context) -> Outcome:
    s = cell.stack
    if s.vllm is None:
        rel = ctx.catalog.triton.get(s.triton or "")
        return Outcome(
            "resolve",
            Status.SKIP,
            Reason.UNKNOWN,
            f"the vLLM in Triton {s.triton} is not known ({rel.source if rel else 'no catalog row'})",
        )
    if s.transformers is None:
        return Outcome(
            "resolve",
            Status.SKIP,
            Reason.UNKNOWN,
            f"no transformers release satisfies vllm {s.vllm}'s bound before {s.triton}'s release",
        )
    vw = ctx.facts.wheel("vllm", s.vllm, s.python)
    tw = ctx.facts.wheel("transformers", s.transformers, s.python)
    evidence: dict[str, Any] = {"python": s.python, "vllm_wheel": vw.filename, "transformers_wheel": tw.filename}
    for w in (vw, tw):
        rp = ctx.facts.requires(w)["requires_python"]
        evidence[f"{w.project}_requires_python"] = rp
        if rp and not SpecifierSet(rp).contains(f"{s.python}.0", prereleases=True):
            return Outcome(
                "resolve",
                Status.FAIL,
                Reason.PYTHON_UNSUPPORTED,
                f"{w.project} {w.version} requires Python {rp}; the stack runs {s.python}",
                evidence,
            )
    spec = ctx.facts.dependency_spec("vllm", s.vllm, "transformers", s.python)
    evidence["vllm_requires_transformers"] = str(spec) if spec is not None else None
    override = None
    if spec is not None and not spec.contains(s.transformers, prereleases=True):
        override = f"transformers=={s.transformers}"
    if ctx.resolve == "full" and ctx.options is not None:
        full = uv_resolve(
            [f"vllm=={s.vllm}", f"transformers=={s.transformers}"],
            [override] if override else [],
            s.python,
            ctx.options,
            ctx.facts.platform,
        )
        evidence["uv"] = {
            "ok": full.ok,
            "packages": len(full.pins),
            "torch": full.pins.get("torch"),
            "tail": full.tail if not full.ok else "",
        }
        if not full.ok:
            return Outcome(
                "resolve",
                Status.FAIL,
                Reason.RESOLVE_CONFLICT,
                f"uv cannot resolve vllm=={s.vllm} with transformers=={s.transformers}"
                + (f" even with the override {override}" if override else "")
                + f": {full.tail.splitlines()[-1] if full.tail else 'no output'}",
                evidence,
            )
    if override:
        return Outcome(
            "resolve",
            Status.FAIL,
            Reason.RESOLVE_CONFLICT,
            f"vllm {s.vllm} declares transformers{spec}; {s.transformers} needs an override",
            evidence,
            override=override,
        )
    rule = f" (chosen by {s.transformers_rule})" if s.transformers_rule else ""
    how = "uv resolves the full tree" if "uv" in evidence else "declared requirements"
    return Outcome(
        "resolve",
        Status.PASS,
        None,
        f"vllm {s.vllm} admits transformers {s.transformers}{rule} on Python {s.python} ({how})",
        evidence,
    )


# -- model-type ------------------------------------------------------------------------------------
def probe_model_type(cell: Cell, ctx: Context) -> Outcome:
    s, m = cell.stack, cell.model
    if s.transformers is None:
        return Outcome("model-type", Status.SKIP, Reason.UNKNOWN, "transformers version not known")
    tw = ctx.facts.wheel("transformers", s.transformers, s.python)
    facts = ctx.facts.model_types(tw)
    known = set(facts["model_types"])
    wanted = [t for t in (m.model_type, m.text_model_type) if t]
    missing = [t for t in wanted if t not in known]
    evidence = {"wheel": tw.filename, "member": facts["member"], "registered": len(known)}
    if missing:
        near = _closest(missing[0], sorted(known))
        return Outcome(
            "model-type",
            Status.FAIL,
            Reason.MODEL_TYPE_UNKNOWN,
            f"transformers {s.transformers} does not register model_type {missing[0]!r}",
            {**evidence, "missing": missing, "closest": near},
        )
    return Outcome(
        "model-type", Status.PASS, None, f"transformers {s.transformers} registers {', '.join(wanted)}", evidence
    )


# -- arch ------------------------------------------------------------------------------------------
def probe_arch(cell: Cell, ctx: Context) -> Outcome:
    s, m = cell.stack, cell.model
    if s.vllm is None:
        return Outcome("arch", Status.SKIP, Reason.UNKNOWN, "vLLM version not known")
    vw = ctx.facts.wheel("vllm", s.vllm, s.python)
    reg = ctx.facts.registry(vw)
    arches: dict[str, list[str]] = reg["architectures"]
    evidence: dict[str, Any] = {"wheel": vw.filename, "member": reg["member"], "registered": len(arches)}
    note = _nvidia_note(cell, ctx)
    entry = arches.get(m.architecture)
    if entry is None:
        near = _closest(m.architecture, sorted(arches))
        return Outcome(
            "arch",
            Status.FAIL,
            Reason.ARCH_UNSUPPORTED,
            f"vllm {s.vllm}'s model registry has no {m.architecture}{note}",
            {**evidence, "closest": near},
        )
    module = entry[0] if entry else None
    evidence["registry_entry"] = entry
    if module and module not in reg["modules"]:
        return Outcome(
            "arch",
            Status.FAIL,
            Reason.ARCH_UNSUPPORTED,
            f"vllm {s.vllm} registers {m.architecture} but ships no models/{module}.py{note}",
            evidence,
        )
    return Outcome(
        "arch", Status.PASS, None, f"vllm {s.vllm} registers {m.architecture} -> {'.'.join(entry)}{note}", evidence
    )


# -- backend-imports ---------------------------------------------------------------------------------
def probe_backend_imports(cell: Cell, ctx: Context) -> Outcome:
    s = cell.stack
    rel = ctx.catalog.triton[s.triton or ""]
    if rel.import_set is None:
        return Outcome(
            "backend-imports",
            Status.SKIP,
            Reason.UNKNOWN,
            f"the vLLM backend source of Triton {rel.release} is not in the catalog; "
            "it can only be read from the image",
        )
    if s.vllm is None:
        return Outcome("backend-imports", Status.SKIP, Reason.UNKNOWN, "vLLM version not known")
    iset = ctx.catalog.import_sets[rel.import_set]
    vw = ctx.facts.wheel("vllm", s.vllm, s.python)
    problems: list[dict[str, Any]] = []
    checked = 0
    for spec in iset.imports:
        sym = ctx.facts.symbols(vw, spec.module)
        checked += 1
        if sym is None:
            problems.append(
                {
                    "reason": str(Reason.BACKEND_IMPORT_MISSING),
                    "module": spec.module,
                    "looked_for": list(module_member(spec.module)),
                    "detail": f"no module {spec.module}",
                }
            )
            continue
        names = set(sym["names"])
        for name in spec.names:
            checked += 1
            if name in names or (sym["lazy"] and name in sym["lazy_strings"]):
                continue
            problems.append(
                {
                    "reason": str(Reason.BACKEND_IMPORT_MISSING),
                    "module": spec.module,
                    "member": sym["member"],
                    "name": name,
                    "detail": f"{spec.module} has no {name}",
                }
            )
    dists = {canonicalize_name(r.name) for r in ctx.facts.requirements(vw, s.python)}
    for mod in ctx.catalog.extern_imports.get(iset.name, ()):
        dist = EXTERN_DISTS.get(mod, mod)
        checked += 1
        if canonicalize_name(dist) not in dists:
            problems.append(
                {
                    "reason": str(Reason.BACKEND_IMPORT_MISSING),
                    "module": mod,
                    "detail": f"{mod} comes from {dist}, which vllm {s.vllm} does not declare",
                }
            )
    keys = ctx.catalog.model_json_keys + (ctx.catalog.model_json_keys_tp if cell.target.tp > 1 else ())
    calls = [(c.target, c.keywords) for c in iset.calls]
    calls.append(("vllm.engine.arg_utils:AsyncEngineArgs", keys))  # AsyncEngineArgs(**model.json)
    for target, keywords in calls:
        checked += 1
        sig = ctx.facts.signature(vw, target)
        if sig is None:
            problems.append(
                {
                    "reason": str(Reason.BACKEND_IMPORT_MISSING),
                    "callable": target,
                    "detail": f"no {target.replace(':', '.')}",
                }
            )
            continue
        if sig["var_keyword"]:
            continue
        missing = [k for k in keywords if k not in sig["params"]]
        if missing:
            problems.append(
                {
                    "reason": str(Reason.BACKEND_SIGNATURE_MISMATCH),
                    "callable": target,
                    "member": sig.get("member"),
                    "missing_keywords": missing,
                    "detail": f"{target.replace(':', '.')} takes no {', '.join(missing)}",
                }
            )
    evidence: dict[str, Any] = {
        "wheel": vw.filename,
        "import_set": iset.name,
        "source": iset.source,
        "inferred": rel.import_set_inferred,
        "checked": checked,
    }
    note = _nvidia_note(cell, ctx)
    if problems and note:
        # The stock container runs NVIDIA's build, not this public wheel: a gap here may be a patch there.
        return Outcome(
            "backend-imports",
            Status.SKIP,
            Reason.UNKNOWN,
            f"Triton {rel.release} backend vs the public vllm {s.vllm}: {problems[0]['detail']}; "
            f"unproven for the container's NVIDIA build {rel.vllm_shipped}: read the image",
            {**evidence, "problems": problems},
        )
    if problems:
        first = problems[0]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return Outcome(
            "backend-imports",
            Status.FAIL,
            Reason(first["reason"]),
            f"Triton {rel.release} backend vs vllm {s.vllm}: {first['detail']}{more}{note}",
            {**evidence, "problems": problems},
        )
    return Outcome(
        "backend-imports",
        Status.PASS,
        None,
        f"all {checked} imports and call keywords of backend set {iset.name} exist in vllm {s.vllm}{note}",
        evidence,
    )


# -- fit -------------------------------------------------------------------------------------------
def kv_bytes(cell: Cell, tokens: int) -> int | None:
    """KV cache for ``tokens`` tokens: full-attention layers hold them all, sliding layers their window."""
    m = cell.model
    if not (m.num_layers and m.num_kv_heads and m.head_dim):
        return None
    per_layer_token = 2 * m.num_kv_heads * m.head_dim * 2  # K and V, bf16
    sliding = m.num_layers - m.num_global_layers
    window = min(tokens, m.sliding_window) if m.sliding_window else tokens
    return per_layer_token * (m.num_global_layers * tokens + sliding * window)


def probe_fit(cell: Cell, ctx: Context) -> Outcome:
    m, t, st = cell.model, cell.target, ctx.settings
    tokens = min(st.kv_reserve_tokens, m.context_length)
    kv = kv_bytes(cell, tokens)
    per_gpu = (m.weight_bytes + (kv or 0)) / t.tp + st.overhead_gib * GIB
    usable = t.gpu.memory_gib * GIB * st.gpu_memory_utilization
    kv_note = f"KV {kv / GIB:.1f} GiB for {tokens} tokens" if kv is not None else "KV shape unknown: not counted"
    evidence = {
        "weights_gib": round(m.weight_bytes / GIB, 2),
        "kv_gib": round((kv or 0) / GIB, 2),
        "tokens": tokens,
        "tp": t.tp,
        "per_gpu_gib": round(per_gpu / GIB, 2),
        "usable_gib": round(usable / GIB, 2),
        "gpu": t.gpu.name,
    }
    detail = (
        f"needs {per_gpu / GIB:.1f} GiB per GPU of {usable / GIB:.1f} usable on {t.gpu.name} "
        f"(weights {m.weight_bytes / GIB:.1f} GiB/tp={t.tp}, {kv_note}, overhead {st.overhead_gib} GiB)"
    )
    if per_gpu > usable:
        return Outcome("fit", Status.FAIL, Reason.DOES_NOT_FIT, detail, evidence)
    return Outcome("fit", Status.PASS, None, detail, evidence)


Probe = Callable[[Cell, Context], Outcome]
Key = Callable[[Cell], tuple[object, ...]]

# Each rung with the part of the cell its outcome depends on (the memo key).
RESOLVE: tuple[str, Probe, Key] = ("resolve", probe_resolve, lambda c: (c.stack.id,))
MODEL_TYPE: tuple[str, Probe, Key] = (
    "model-type",
    probe_model_type,
    lambda c: (c.stack.transformers, c.stack.python, c.model.model_type, c.model.text_model_type),
)
ARCH: tuple[str, Probe, Key] = ("arch", probe_arch, lambda c: (c.stack.id, c.model.architecture))
BACKEND: tuple[str, Probe, Key] = ("backend-imports", probe_backend_imports, lambda c: (c.stack.id, c.target.tp > 1))
FIT: tuple[str, Probe, Key] = ("fit", probe_fit, lambda c: (c.model.id, c.target))


def static_probes(cell: Cell) -> list[tuple[str, Probe, Key]]:
    if cell.stack.kind is StackKind.TRITON_VLLM:
        return [RESOLVE, MODEL_TYPE, ARCH, BACKEND, FIT]
    return [RESOLVE, MODEL_TYPE, ARCH, FIT]


def run_static(cell: Cell, ctx: Context) -> list[Outcome]:
    out = []
    for name, fn, key in static_probes(cell):
        k = (name, *key(cell))
        if k not in ctx.memo:
            ctx.memo[k] = _timed(name, lambda fn=fn: fn(cell, ctx))  # type: ignore[misc]
        out.append(ctx.memo[k])
    return out

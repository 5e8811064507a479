"""The static tier: resolve, model-type, arch, backend-imports, fit. No install, no GPU: published wheels only."""

from __future__ import annotations

import difflib
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from stackmatrix.domain import IMAGE_RULE, STOCK_RULE, Cell, Outcome, Reason, Rung, Status, TritonRelease
from stackmatrix.errors import InfraUnavailable
from stackmatrix.ladder.facts import Facts, module_member
from stackmatrix.ladder.uvresolve import uv_resolve
from stackmatrix.matrix.catalog import Catalog
from stackmatrix.matrix.file import Settings as MatrixSettings
from stackmatrix.matrix.pins import newest_before
from stackmatrix.options import Settings
from stackmatrix.redact import redact_obj
from stackmatrix.wheels.index import VersionNotFound, WheelFile

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
    # backend-imports from the cell's image when it is here (docker runner); None: the catalog's import sets only
    backend_image: Callable[[Cell, Context], Outcome | None] | None = None


def _closest(name: str, known: list[str]) -> list[str]:
    """Near names as evidence (same 4-letter stem first: difflib over all of a registry is slow)."""
    stem = [k for k in known if k[:4].lower() == name[:4].lower()]
    return difflib.get_close_matches(name, stem or known, n=3)


def _timed(name: Rung, fn: Callable[[], Outcome]) -> Outcome:
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
    except OSError as exc:
        if exc.errno is not None:  # a fault of this machine (full disk, read-only cache) is no cell's verdict
            raise
        out = Outcome(name, Status.ERROR, Reason.UNKNOWN, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a wheel we cannot read: say so on this cell, with the traceback as evidence
        tb = traceback.format_exception(exc)[-6:]
        out = Outcome(name, Status.ERROR, Reason.UNKNOWN, f"{type(exc).__name__}: {exc}", {"traceback": tb})
    detail, evidence = redact_obj([out.detail, out.evidence])  # one look at the environment's secrets
    return Outcome(out.probe, out.status, out.reason, detail, evidence, time.perf_counter() - t0, out.override)


def nvidia_note(cell: Cell, ctx: Context) -> str:
    if cell.stack.stock:  # the container runs NVIDIA's build of the public vLLM read here
        rel = ctx.catalog.triton[cell.stack.triton or ""]
        shipped = rel.image.version("vllm") if rel.image is not None else None
        if shipped and shipped != cell.stack.vllm:
            return f" (the image ships {shipped}; read from the public {cell.stack.vllm} wheel)"
        if rel.image is None and rel.vllm_shipped and rel.vllm_shipped != rel.vllm_public:
            return f" (container ships {rel.vllm_shipped}; read from the public {rel.vllm_public} wheel)"
    return ""


# -- resolve ---------------------------------------------------------------------------------------
def probe_resolve_python_backend(cell: Cell, ctx: Context) -> Outcome:
    """triton-python: transformers (and the torch it finds) in the container's Python; no vLLM bound applies."""
    s = cell.stack
    assert s.transformers is not None
    tw = ctx.facts.wheel("transformers", s.transformers, s.python)
    rp = ctx.facts.requires(tw)["requires_python"]
    evidence = {"python": s.python, "transformers_wheel": tw.filename, "transformers_requires_python": rp}
    if rp and not SpecifierSet(rp).contains(f"{s.python}.0", prereleases=True):
        detail = f"transformers {s.transformers} requires Python {rp}; Triton {s.triton}'s Python is {s.python}"
        return Outcome(Rung.RESOLVE, Status.FAIL, Reason.PYTHON_UNSUPPORTED, detail, evidence)
    detail = f"transformers {s.transformers} installs on Triton {s.triton}'s Python {s.python}"
    return Outcome(Rung.RESOLVE, Status.PASS, None, detail, evidence)


def probe_resolve(cell: Cell, ctx: Context) -> Outcome:
    s = cell.stack
    if s.vllm is None:
        rel = ctx.catalog.triton.get(s.triton or "")
        reason, why = unknown_backend(rel) if rel else (Reason.UNKNOWN, "no catalog row")
        return Outcome(
            Rung.RESOLVE,
            Status.SKIP,
            reason,
            f"the vLLM in Triton {s.triton} is not known: not in the catalog ({rel.source if rel else ''}) and {why}",
        )
    vw = ctx.facts.wheel("vllm", s.vllm, s.python)  # first: a vLLM the index lacks is version-not-found
    if s.transformers is None:
        return Outcome(
            Rung.RESOLVE,
            Status.SKIP,
            Reason.UNKNOWN,
            f"no transformers release satisfies vllm {s.vllm}'s bound before {s.triton}'s release",
        )
    tw = ctx.facts.wheel("transformers", s.transformers, s.python)
    evidence: dict[str, Any] = {"python": s.python, "vllm_wheel": vw.filename, "transformers_wheel": tw.filename}
    if s.transformers_rule == IMAGE_RULE:  # installed together in the image: nothing to resolve
        rel = ctx.catalog.triton[s.triton or ""]
        assert rel.image is not None
        evidence["image"] = {"ref": rel.image.ref, "digest": rel.image.digest}
        evidence["shipped"] = {
            x.name: {"version": x.version, "file": x.path, "layer": x.layer} for x in rel.image.shipped
        }
        return Outcome(
            Rung.RESOLVE,
            Status.PASS,
            None,
            f"the image ships vllm {rel.image.version('vllm')} with transformers {rel.image.version('transformers')} "
            f"(read from {rel.image.ref})",
            evidence,
        )
    for w in (vw, tw):
        rp = ctx.facts.requires(w)["requires_python"]
        evidence[f"{w.project}_requires_python"] = rp
        if rp and not SpecifierSet(rp).contains(f"{s.python}.0", prereleases=True):
            return Outcome(
                Rung.RESOLVE,
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
                Rung.RESOLVE,
                Status.FAIL,
                Reason.RESOLVE_CONFLICT,
                f"uv cannot resolve vllm=={s.vllm} with transformers=={s.transformers}"
                + (f" even with the override {override}" if override else "")
                + f": {full.tail.splitlines()[-1] if full.tail else 'no output'}",
                evidence,
            )
    if override:
        return Outcome(
            Rung.RESOLVE,
            Status.FAIL,
            Reason.RESOLVE_CONFLICT,
            f"vllm {s.vllm} declares transformers{spec}; {s.transformers} needs an override",
            evidence,
            override=override,
        )
    rule = f" (chosen by {s.transformers_rule})" if s.transformers_rule else ""
    how = "uv resolves the full tree" if "uv" in evidence else "declared requirements"
    return Outcome(
        Rung.RESOLVE,
        Status.PASS,
        None,
        f"vllm {s.vllm} admits transformers {s.transformers}{rule} on Python {s.python} ({how})",
        evidence,
    )


# -- model-type ------------------------------------------------------------------------------------
def probe_model_type(cell: Cell, ctx: Context) -> Outcome:
    s, m = cell.stack, cell.model
    if s.transformers is None:
        return Outcome(Rung.MODEL_TYPE, Status.SKIP, Reason.UNKNOWN, "transformers version not known")
    tw = ctx.facts.wheel("transformers", s.transformers, s.python)
    facts = ctx.facts.model_types(tw)
    known = set(facts["model_types"])
    wanted = [t for t in (m.model_type, m.text_model_type) if t]
    missing = [t for t in wanted if t not in known]
    evidence = {"wheel": tw.filename, "member": facts["member"], "registered": len(known)}
    if missing and (unsure := _inferred_gap(cell, ctx, missing[0])) is not None:
        return unsure
    if missing:
        near = _closest(missing[0], sorted(known))
        return Outcome(
            Rung.MODEL_TYPE,
            Status.FAIL,
            Reason.MODEL_TYPE_UNKNOWN,
            f"transformers {s.transformers} does not register model_type {missing[0]!r}",
            {**evidence, "missing": missing, "closest": near},
        )
    return Outcome(
        Rung.MODEL_TYPE, Status.PASS, None, f"transformers {s.transformers} registers {', '.join(wanted)}", evidence
    )


def _inferred_gap(cell: Cell, ctx: Context, model_type: str) -> Outcome | None:
    """A stock container whose transformers is only inferred (``@release-day``: its image was not read, NVIDIA's
    notes do not say) lacks ``model_type``: certain only if no transformers uploaded before the release's month
    ended registers it (NVIDIA ships outside the public bound: 26.05 holds transformers 5.6.0). Else: not-run."""
    s = cell.stack
    if s.transformers_rule != STOCK_RULE:
        return None
    rel = ctx.catalog.triton[s.triton or ""]
    newest = newest_before(ctx.facts, "transformers", rel.cutoff)
    if newest is None or newest == s.transformers:
        return None
    if model_type not in ctx.facts.model_types(ctx.facts.wheel("transformers", newest, s.python))["model_types"]:
        return None  # nothing the container could hold knows it
    reason, why = unknown_backend(rel)
    return Outcome(
        Rung.MODEL_TYPE,
        Status.SKIP,
        reason,
        f"transformers {s.transformers} (inferred, {STOCK_RULE}) does not register {model_type!r}, but "
        f"{newest}, uploaded before Triton {rel.release} was cut, does: what the image ships decides, and {why}",
        {"inferred": s.transformers, "newest_before_release": newest, "image_problem": rel.image_problem},
    )


# -- arch ------------------------------------------------------------------------------------------
def probe_arch(cell: Cell, ctx: Context) -> Outcome:
    s, m = cell.stack, cell.model
    if s.vllm is None:
        return Outcome(Rung.ARCH, Status.SKIP, Reason.UNKNOWN, "vLLM version not known")
    vw = ctx.facts.wheel("vllm", s.vllm, s.python)
    reg = ctx.facts.registry(vw)
    arches: dict[str, list[str]] = reg["architectures"]
    evidence: dict[str, Any] = {"wheel": vw.filename, "member": reg["member"], "registered": len(arches)}
    note = nvidia_note(cell, ctx)
    entry = arches.get(m.architecture)
    if entry is None:
        near = _closest(m.architecture, sorted(arches))
        return Outcome(
            Rung.ARCH,
            Status.FAIL,
            Reason.ARCH_UNSUPPORTED,
            f"vllm {s.vllm}'s model registry has no {m.architecture}{note}",
            {**evidence, "closest": near},
        )
    module = entry[0] if entry else None
    evidence["registry_entry"] = entry
    if module and module not in reg["modules"]:
        return Outcome(
            Rung.ARCH,
            Status.FAIL,
            Reason.ARCH_UNSUPPORTED,
            f"vllm {s.vllm} registers {m.architecture} but ships no models/{module}.py{note}",
            evidence,
        )
    return Outcome(
        Rung.ARCH, Status.PASS, None, f"vllm {s.vllm} registers {m.architecture} -> {'.'.join(entry)}{note}", evidence
    )


# -- backend-imports ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendSource:
    """What a Triton vLLM backend imports and calls: the catalog's import set, or one read from an image."""

    name: str
    imports: tuple[tuple[str, tuple[str, ...]], ...]  # vLLM modules and the names taken from them
    extern: tuple[str, ...]  # top-level modules from outside vLLM (numpy, PIL, torch)
    calls: tuple[tuple[str, tuple[str, ...]], ...]  # "module:Qualname" -> keywords passed
    source: str
    inferred: bool = False
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # "module:Class" -> fields read off an instance


def parsed_backend(name: str, found: dict[str, Any], source: str) -> BackendSource:
    """A backend's source as parsed (``probes/backend_source.py``: imports and calls) as an import set: vLLM modules
    by name, the rest by top-level module."""
    imports = {m: tuple(n) for m, n in found["imports"].items()}
    return BackendSource(
        name,
        tuple((m, n) for m, n in imports.items() if m.split(".")[0] == "vllm"),
        tuple(sorted({m.split(".")[0] for m in imports if m.split(".")[0] != "vllm"})),
        tuple((t, tuple(k)) for t, k in found["calls"].items() if k),
        source,
    )


def catalog_source(cell: Cell, ctx: Context) -> BackendSource | None:
    rel = ctx.catalog.triton[cell.stack.triton or ""]
    if rel.import_set is None:
        return None
    iset = ctx.catalog.import_sets[rel.import_set]
    return BackendSource(
        iset.name,
        tuple((i.module, tuple(i.names)) for i in iset.imports),
        ctx.catalog.extern_imports.get(iset.name, ()),
        tuple((c.target, tuple(c.keywords)) for c in iset.calls),
        iset.source,
        rel.import_set_inferred,
        tuple((a.target, tuple(a.keywords)) for a in iset.attributes),
    )


def engine_args_call(cell: Cell, ctx: Context) -> tuple[str, tuple[str, ...]]:
    """``AsyncEngineArgs(**model.json)``: the keys the stack's model.json passes (with tp > 1, the Ray executor)."""
    keys = ctx.catalog.model_json_keys + (ctx.catalog.model_json_keys_tp if cell.target.tp > 1 else ())
    return "vllm.engine.arg_utils:AsyncEngineArgs", keys


class VllmView(Protocol):
    """The vLLM a backend is checked against: a published wheel, or the one an image ships."""

    @property
    def name(self) -> str: ...

    def symbols(self, module: str) -> dict[str, Any] | None: ...
    def signature(self, target: str) -> dict[str, Any] | None: ...
    def declared(self) -> set[str]: ...


@dataclass(frozen=True)
class WheelVllm:
    """The stack's vLLM wheel (read, never installed)."""

    facts: Facts
    wheel: WheelFile
    python: str

    @property
    def name(self) -> str:
        return self.wheel.filename

    def symbols(self, module: str) -> dict[str, Any] | None:
        return self.facts.symbols(self.wheel, module)

    def signature(self, target: str) -> dict[str, Any] | None:
        return self.facts.signature(self.wheel, target)

    def declared(self) -> set[str]:
        return {canonicalize_name(r.name) for r in self.facts.requirements(self.wheel, self.python)}


def wheel_vllm(cell: Cell, ctx: Context) -> WheelVllm:
    assert cell.stack.vllm is not None
    return WheelVllm(ctx.facts, ctx.facts.wheel("vllm", cell.stack.vllm, cell.stack.python), cell.stack.python)


def wheel_problems(
    cell: Cell, ctx: Context, src: BackendSource, view: VllmView | None = None
) -> tuple[list[dict[str, Any]], int, str]:
    """Every import, name, call keyword and field of ``src`` looked up in ``view`` (the stack's vLLM wheel
    unless given: read, never imported)."""
    if view is None:
        view = wheel_vllm(cell, ctx)
    problems: list[dict[str, Any]] = []
    checked = 0
    for module, wanted in src.imports:
        sym = view.symbols(module)
        checked += 1
        if sym is None:
            problems.append(
                {
                    "reason": str(Reason.BACKEND_IMPORT_MISSING),
                    "module": module,
                    "looked_for": list(module_member(module)),
                    "detail": f"no module {module}",
                }
            )
            continue
        names = set(sym["names"])
        for name in wanted:
            checked += 1
            if name in names or (sym["lazy"] and name in sym["lazy_strings"]):
                continue
            problems.append(
                {
                    "reason": str(Reason.BACKEND_IMPORT_MISSING),
                    "module": module,
                    "member": sym["member"],
                    "name": name,
                    "detail": f"{module} has no {name}",
                }
            )
    dists = view.declared()
    for mod in src.extern:
        dist = EXTERN_DISTS.get(mod, mod)
        checked += 1
        if canonicalize_name(dist) not in dists:
            problems.append(
                {
                    "reason": str(Reason.BACKEND_IMPORT_MISSING),
                    "module": mod,
                    "detail": f"{mod} comes from {dist}, which {view.name} does not declare",
                }
            )
    for target, keywords in (*src.calls, engine_args_call(cell, ctx)):
        checked += 1
        sig = view.signature(target)
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
    for cls, fields in src.attributes:
        checked += 1
        sig = view.signature(cls)
        missing = list(fields) if sig is None else [n for n in fields if n not in sig["params"]]
        if missing:
            problems.append(
                {
                    "reason": str(Reason.BACKEND_SIGNATURE_MISMATCH),
                    "class": cls,
                    "missing_fields": missing,
                    "detail": f"{cls.replace(':', '.')} has no field {', '.join(missing)}",
                }
            )
    return problems, checked, view.name


def backend_outcome(
    what: str, against: str, problems: list[dict[str, Any]], checked: int, evidence: dict[str, Any], note: str = ""
) -> Outcome:
    """``what`` (the backend) vs ``against`` (the vLLM): the first problem decides, the rest are evidence."""
    evidence = {**evidence, "checked": checked}
    if problems:
        first = problems[0]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return Outcome(
            Rung.BACKEND_IMPORTS,
            Status.FAIL,
            Reason(first["reason"]),
            f"{what} vs {against}: {first['detail']}{more}{note}",
            {**evidence, "problems": problems},
        )
    return Outcome(
        Rung.BACKEND_IMPORTS,
        Status.PASS,
        None,
        f"all {checked} imports and call keywords of {what} exist in {against}{note}",
        evidence,
    )


def unknown_backend(rel: TritonRelease) -> tuple[Reason, str]:
    """Why the backend of ``rel`` could not be read: its registry did not answer, or no image was there."""
    if rel.image_problem is not None:
        reason, detail = rel.image_problem
        return Reason(reason), f"its image could not be read ({detail})"
    return Reason.UNKNOWN, "its image was not read"


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
        return Outcome(Rung.FIT, Status.FAIL, Reason.DOES_NOT_FIT, detail, evidence)
    return Outcome(Rung.FIT, Status.PASS, None, detail, evidence)


Probe = Callable[[Cell, Context], Outcome]
Key = Callable[[Cell], tuple[object, ...]]


@dataclass(frozen=True)
class StaticRung:
    """A static rung: its probe, and the part of the cell its outcome depends on (the memo key)."""

    rung: Rung
    probe: Probe
    key: Key


# The static rungs the kinds choose from (each kind module lists its own, in order).
RESOLVE = StaticRung(Rung.RESOLVE, probe_resolve, lambda c: (c.stack.id,))
RESOLVE_PYTHON_BACKEND = StaticRung(Rung.RESOLVE, probe_resolve_python_backend, lambda c: (c.stack.id,))
MODEL_TYPE = StaticRung(
    Rung.MODEL_TYPE,
    probe_model_type,
    # an inferred stock transformers is judged against its release's cut (_inferred_gap): the release is part of it
    lambda c: (
        c.stack.transformers,
        c.stack.python,
        c.model.model_type,
        c.model.text_model_type,
        c.stack.triton if c.stack.transformers_rule == STOCK_RULE else None,
    ),
)
ARCH = StaticRung(Rung.ARCH, probe_arch, lambda c: (c.stack.id, c.model.architecture))
FIT = StaticRung(Rung.FIT, probe_fit, lambda c: (c.model.id, c.target))


def run_static(cell: Cell, ctx: Context, rungs: Sequence[StaticRung]) -> list[Outcome]:
    """The cell's static rungs (its kind's: the caller looks them up), each memoized by what it depends on."""
    out = []
    for step in rungs:
        k = (step.rung, *step.key(cell))
        if k not in ctx.memo:
            ctx.memo[k] = _timed(step.rung, lambda fn=step.probe: fn(cell, ctx))  # type: ignore[misc]
        out.append(ctx.memo[k])
    return out

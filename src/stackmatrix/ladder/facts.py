"""Facts about published wheels, read from the wheels themselves and cached per wheel.

This is the only place that knows where in a vLLM or transformers wheel a fact lives. Everything returns
plain JSON-able data so the reader can cache it; extractor keys carry a version so a change re-derives.
"""

from __future__ import annotations

from email.parser import Parser
from typing import Any

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from stackmatrix.errors import InfraUnavailable
from stackmatrix.ladder import pysource, quantsource
from stackmatrix.wheels.index import Index, WheelFile
from stackmatrix.wheels.reader import WheelReader

FACTS_VERSION = "2"
_REGISTRY_PATHS = ("vllm/model_executor/models/registry.py", "vllm/model_executor/models/__init__.py")
_CONFIG_AUTO = "transformers/models/auto/configuration_auto.py"
_CT = "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py"
_CT_SCHEMES = "vllm/model_executor/layers/quantization/compressed_tensors/schemes/__init__.py"


def marker_env(python: str, platform: str = "x86_64") -> dict[str, str]:
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(
        python_version=python,
        python_full_version=f"{python}.0",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine=platform,
        os_name="posix",
        implementation_name="cpython",
        platform_python_implementation="CPython",
        extra="",
    )
    return env


def module_member(module: str) -> tuple[str, str]:
    base = module.replace(".", "/")
    return f"{base}.py", f"{base}/__init__.py"


def relative_member(path: str, origin: str) -> str:
    """The member a relative import in ``path`` names: ``("a/b/c.py", ".d")`` -> ``a/b/d.py``."""
    level = len(origin) - len(origin.lstrip("."))
    module = origin[level:]
    parts = path.split("/")[:-1] if level else []
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return "/".join(parts + module.split(".")) + ".py" if module else "/".join(parts) + "/__init__.py"


class Facts:
    """The static tier's view of the index and the wheels (implements :class:`expand.IndexView`)."""

    def __init__(self, index: Index, reader: WheelReader, platform: str = "x86_64") -> None:
        self.index, self.reader, self.platform = index, reader, platform
        self._versions: dict[str, list[str]] = {}
        self._wheels: dict[tuple[str, str, str], WheelFile] = {}
        self._specs: dict[tuple[str, str, str, str], SpecifierSet | None] = {}
        self._reqs: dict[tuple[str, str], list[Requirement]] = {}

    # -- index (memoized: every probe of every cell asks) -----------------------------------------
    def versions(self, project: str) -> list[str]:
        if project not in self._versions:
            self._versions[project] = [str(v) for v in self.index.versions(project)]
        return self._versions[project]

    def newest(self, project: str) -> str:
        """The newest final release; an index that lists none of a project the matrix needs is exit 4."""
        known = self.versions(project)
        if not known:
            raise InfraUnavailable(f"the index {self.index.index_url} lists no release of {project}")
        return known[-1]

    def upload_time(self, project: str, version: str) -> str | None:
        return self.index.upload_time(project, version)

    def wheel(self, project: str, version: str, python: str) -> WheelFile:
        key = (project, version, python)
        if key not in self._wheels:
            self._wheels[key] = self.index.wheel(project, version, python=python, platform=self.platform)
        return self._wheels[key]

    # -- metadata -------------------------------------------------------------------------------
    def requires(self, wheel: WheelFile) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            msg = Parser().parsestr(self.reader.metadata(wheel), headersonly=True)
            return {"requires_python": msg.get("Requires-Python"), "requires_dist": msg.get_all("Requires-Dist") or []}

        with self.reader.lock(wheel):
            result: dict[str, Any] = self.reader.fact(wheel, f"requires@{FACTS_VERSION}", compute)
            return result

    def requirements(self, wheel: WheelFile, python: str) -> list[Requirement]:
        """The wheel's unconditional requirements for a Linux host running ``python`` (markers evaluated)."""
        key = (wheel.key, python)
        if key not in self._reqs:
            self._reqs[key] = self._requirements(wheel, python)
        return self._reqs[key]

    def _requirements(self, wheel: WheelFile, python: str) -> list[Requirement]:
        env = marker_env(python, self.platform)
        out = []
        for line in self.requires(wheel)["requires_dist"]:
            try:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate(env):
                    out.append(req)
            except (InvalidRequirement, InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                continue  # a requirement no installer could use either
        return out

    def dependency_spec(self, project: str, version: str, dependency: str, python: str) -> SpecifierSet | None:
        key = (project, version, dependency, python)
        if key not in self._specs:
            self._specs[key] = self._dependency_spec(project, version, dependency, python)
        return self._specs[key]

    def _dependency_spec(self, project: str, version: str, dependency: str, python: str) -> SpecifierSet | None:
        wheel = self.wheel(project, version, python)
        name = canonicalize_name(dependency)

        def compute() -> str | None:
            specs = [r.specifier for r in self.requirements(wheel, python) if canonicalize_name(r.name) == name]
            if not specs:
                return None
            out = SpecifierSet()
            for s in specs:
                out &= s
            return str(out)

        with self.reader.lock(wheel):
            text = self.reader.fact(wheel, f"dependency@{FACTS_VERSION}:{name}:py{python}:{self.platform}", compute)
        return None if text is None else SpecifierSet(text)

    # -- members --------------------------------------------------------------------------------
    def _source(self, wheel: WheelFile, members: tuple[str, ...]) -> tuple[str, str] | None:
        for name in members:
            data = self.reader.member(wheel, name)
            if data is not None:
                return name, data.decode("utf-8", "replace")
        return None

    def model_types(self, wheel: WheelFile) -> dict[str, Any]:
        """``model_type`` keys transformers registers (``CONFIG_MAPPING_NAMES``)."""

        def compute() -> dict[str, Any]:
            members: list[str] = []
            keys: set[str] = set()
            path: str | None = _CONFIG_AUTO
            while path and len(members) < 4:  # follow ``from .auto_mappings import CONFIG_MAPPING_NAMES``
                found = self._source(wheel, (path,))
                if found is None:
                    break
                members.append(found[0])
                new, origin = pysource.mapping_keys(found[1], "CONFIG_MAPPING_NAMES")
                keys.update(new)
                path = relative_member(path, origin) if origin else None
            return {"member": " + ".join(members) or None, "model_types": sorted(keys)}

        with self.reader.lock(wheel):
            result: dict[str, Any] = self.reader.fact(wheel, f"model_types@{FACTS_VERSION}", compute)
            return result

    def registry(self, wheel: WheelFile) -> dict[str, Any]:
        """vLLM's model registry: architecture -> [module, class], and which model files the wheel ships."""

        def compute() -> dict[str, Any]:
            found = self._source(wheel, _REGISTRY_PATHS)
            if found is None:
                return {"member": None, "architectures": {}, "modules": []}
            names = self.reader.names(wheel)
            prefix = "vllm/model_executor/models/"
            modules = sorted({n[len(prefix) : -3] for n in names if n.startswith(prefix) and n.endswith(".py")})
            return {"member": found[0], "architectures": pysource.vllm_registry(found[1]), "modules": modules}

        with self.reader.lock(wheel):
            result: dict[str, Any] = self.reader.fact(wheel, f"registry@{FACTS_VERSION}", compute)
            return result

    def symbols(self, wheel: WheelFile, module: str) -> dict[str, Any] | None:
        """Top-level names of ``module`` in the wheel; None when the wheel has no such module."""

        def compute() -> dict[str, Any] | None:
            found = self._source(wheel, module_member(module))
            if found is None:
                return None
            return {"member": found[0], **pysource.module_symbols(found[1])}

        with self.reader.lock(wheel):
            result: dict[str, Any] | None = self.reader.fact(wheel, f"symbols@{FACTS_VERSION}:{module}", compute)
            return result

    def _inherited(self, wheel: WheelFile, module: str, qualname: str, depth: int) -> dict[str, Any] | None:
        """``Class.method`` the class does not define: the method of the first base that does (a base defined in
        the module, or imported into it)."""
        owner, rest = qualname.rsplit(".", 1)
        cls = self.signature(wheel, f"{module}:{owner}", depth + 1)
        member = str((cls or {}).get("member") or "")
        where = member.removesuffix(".py").removesuffix("/__init__").replace("/", ".") or module  # re-exported
        for base in (cls or {}).get("bases", []):
            if base.isidentifier():
                found = self.signature(wheel, f"{where}:{base}.{rest}", depth + 1)
                if found is not None:
                    return found
        return None

    def signature(self, wheel: WheelFile, target: str, depth: int = 0) -> dict[str, Any] | None:
        """Parameters of ``module:Qualname`` in the wheel, following re-exports and dataclass bases."""
        module, qualname = target.split(":", 1)

        def compute() -> dict[str, Any] | None:
            found = self._source(wheel, module_member(module))
            if found is None:
                return None
            sig = pysource.callable_signature(found[1], qualname)
            if sig is None:
                origin = pysource.import_origin(found[1], qualname.split(".")[0])
                if origin is None:
                    return None
                rest = qualname.split(".", 1)[1:]  # re-exported: look where it comes from
                return {"kind": "reexport", "origin": origin + ("." + rest[0] if rest else "")}
            sig["member"] = found[0]
            return sig

        with self.reader.lock(wheel):
            sig: dict[str, Any] | None = self.reader.fact(wheel, f"signature@{FACTS_VERSION}:{target}", compute)
        if sig is None and "." in qualname and depth <= 4:
            return self._inherited(wheel, module, qualname, depth)
        if sig is None or depth > 4:
            return sig
        if sig["kind"] == "reexport":
            return self.signature(wheel, sig["origin"], depth + 1)
        if sig["kind"] == "dataclass" and sig.get("bases"):
            params = list(sig["params"])
            var_kw = sig["var_keyword"]
            for base in sig["bases"]:
                # a base defined in this module, or imported into it (followed as a re-export)
                base_sig = self.signature(wheel, f"{module}:{base}", depth + 1) if base.isidentifier() else None
                if base_sig is not None:
                    params += [p for p in base_sig["params"] if p not in params]
                    var_kw = var_kw or base_sig["var_keyword"]
            return {**sig, "params": params, "var_keyword": var_kw}
        return sig

    def quant_scheme(self, wheel: WheelFile, predicates: tuple[str, ...], strategy: str | None) -> dict[str, Any]:
        """How vLLM's compressed-tensors code takes a checkpoint that ``predicates`` recognise: the scheme classes
        it returns (native first, then fallbacks), each with its minimum capability and where its module is."""

        def compute() -> dict[str, Any]:
            found = self._source(wheel, (_CT,))
            if found is None:
                return {"member": None, "ways": [], "accepts": None}
            branch = quantsource.scheme_branch(found[1], predicates)
            accepts = None
            if strategy is not None:  # the predicate must take the strategy (fp8 block from vLLM 0.11)
                accepts = any(quantsource.function_mentions(found[1], p, strategy) for p in predicates)
            init = self._source(wheel, (_CT_SCHEMES,))
            where = quantsource.relative_imports(init[1]) if init else {}
            ways = [self._scheme_way(wheel, name, where.get(name)) for name in branch["classes"]]
            return {**branch, "member": found[0], "ways": ways, "accepts": accepts}

        key = f"quant@{FACTS_VERSION}:{','.join(predicates)}:{strategy}"
        with self.reader.lock(wheel):
            result: dict[str, Any] = self.reader.fact(wheel, key, compute)
            return result

    def _scheme_way(self, wheel: WheelFile, name: str, origin: str | None) -> dict[str, Any]:
        member = relative_member(_CT_SCHEMES, origin) if origin else None
        found = self._source(wheel, (member,)) if member else None
        facts = quantsource.scheme_class(found[1], name) if found else None
        if facts is None:
            return {"class": name, "member": member, "min_capability": None, "block": False, "chooses": [], "costs": []}
        costs = list(facts["costs"])
        for module in facts.pop("imports"):  # where its kernels live: the Marlin utilities log the fallback's cost
            if "marlin" in module and (util := self._source(wheel, module_member(module))) is not None:
                costs += quantsource.costs(util[1])
        return {"class": name, "member": member, **facts, "costs": list(dict.fromkeys(costs))}

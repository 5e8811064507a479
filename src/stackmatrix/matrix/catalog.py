"""The catalogs under ``matrix/``: GPUs, models, Triton releases and the vLLM backend's import sets."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import Field

from stackmatrix.asof import AsOf, moment
from stackmatrix.domain import CallSpec, CudaDriver, Gpu, ImportSet, ImportSpec, Model, TritonRelease, public_version
from stackmatrix.errors import BadInput
from stackmatrix.files.embedded import data_dir
from stackmatrix.files.tomlfile import Strict, load
from stackmatrix.ids import check_id_part

# A dotted Python module path and an identifier: import sets name what the backend imports from vLLM.
MODULE = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
IDENT = r"^[A-Za-z_]\w*$"


DRIVER = r"^[1-9][0-9]{2,3}(\.[0-9]{1,3}){0,2}$"  # a driver release or a bare branch ("570")


class _Gpu(Strict):
    name: str
    memory_gib: float = Field(gt=0, le=100_000)
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    fp8: bool
    fp4: bool
    datacenter: bool
    source: str


class _Gpus(Strict):
    gpu: list[_Gpu]


class _Model(Strict):
    id: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    variant: str
    tuning: str = Field(pattern=r"^(it|base)$")
    quant: str
    base: str | None = None
    architecture: str = Field(pattern=IDENT)  # a class name; it also names tiny checkpoints' folders
    model_type: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    text_model_type: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    params_total_b: float = Field(gt=0, le=1_000_000)
    params_active_b: float = Field(gt=0, le=1_000_000)
    modalities: list[str]
    context_length: int = Field(gt=0, le=1_000_000_000)
    dtype: str
    weight_bytes: int = Field(gt=0, le=10**15)
    num_layers: int = Field(ge=0, le=100_000)
    num_kv_heads: int = Field(ge=0, le=100_000)
    head_dim: int = Field(ge=0, le=100_000)
    sliding_window: int = Field(ge=0, le=1_000_000_000)
    num_global_layers: int = Field(ge=0, le=100_000)
    source: str
    verified: bool
    note: str = ""


class _Models(Strict):
    model: list[_Model]


class _Import(Strict):
    module: str = Field(pattern=MODULE)
    names: list[Annotated[str, Field(pattern=IDENT)]]


class _Call(Strict):
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    keywords: list[Annotated[str, Field(pattern=IDENT)]]


class _Attributes(Strict):
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    names: list[Annotated[str, Field(pattern=IDENT)]]


class _ImportSet(Strict):
    source: str
    extern: list[Annotated[str, Field(pattern=IDENT)]] = Field(default_factory=list)
    imports: list[_Import]
    calls: list[_Call] = Field(default_factory=list)
    attributes: list[_Attributes] = Field(default_factory=list)


class _Release(Strict):
    release: str = Field(pattern=r"^\d\d\.\d\d$")
    triton_version: str
    tritonclient: str | None = None
    vllm_shipped: str | None = None
    cuda: str | None = None
    driver: str | None = None
    python: str | None = Field(None, pattern=r"^3\.\d+(\.\d+)?$")
    import_set: str | None = None
    import_set_inferred: bool = False
    verified: bool = True
    source: str
    upstream: str | None = Field(None, pattern=r"^\d\d\.\d\d$")
    upstream_source: str | None = None
    published: str | None = None  # RFC 3339 time or a day; checked by asof.moment
    published_source: str | None = None
    min_driver: str | None = Field(None, pattern=DRIVER)
    forward_compat: list[Annotated[str, Field(pattern=DRIVER)]] = Field(default_factory=list)
    driver_source: str = ""


class _VllmContainer(Strict):
    release: str = Field(pattern=r"^\d\d\.\d\d$")
    vllm: str
    transformers: str
    torch: str | None = None
    cuda: str | None = None
    source: str


class _Toolkit(Strict):
    cuda: str = Field(pattern=r"^\d+\.\d+$")
    driver: str = Field(pattern=DRIVER)
    source: str


class _Family(Strict):
    major: str = Field(pattern=r"^\d+$")
    driver: str = Field(pattern=DRIVER)
    source: str


class _Cuda(Strict):
    toolkit: list[_Toolkit]
    family: list[_Family]


class _ModelJson(Strict):
    keys: list[str]
    keys_tp: list[str]
    source: str


class _Triton(Strict):
    release: list[_Release]
    vllm_container: list[_VllmContainer] = Field(default_factory=list)
    import_sets: dict[str, _ImportSet]
    model_json: _ModelJson


@dataclass(frozen=True)
class Catalog:
    gpus: dict[str, Gpu]
    models: tuple[Model, ...]
    triton: dict[str, TritonRelease]
    import_sets: dict[str, ImportSet]
    extern_imports: dict[str, tuple[str, ...]]  # import set -> top-level non-vLLM modules it imports
    model_json_keys: tuple[str, ...]
    model_json_keys_tp: tuple[str, ...]
    cuda: dict[str, CudaDriver] = field(default_factory=dict)  # "12.8" -> the driver the toolkit needs
    cuda_families: dict[str, CudaDriver] = field(default_factory=dict)  # "12" -> minor-version compatibility's
    later: dict[str, str] = field(default_factory=dict)  # releases an as-of leaves out -> when they came out

    def as_of(self, when: AsOf | None) -> Catalog:
        """The catalog as it was then: the Triton releases published after ``when`` are left out (``later``
        names them, so a matrix or a flag that names one is told why)."""
        if when is None:
            return self
        kept, later = {}, {}
        for name, r in self.triton.items():
            if when.sees(published_moment(r)):
                kept[name] = r
            else:
                later[name] = r.published or ""
        return replace(self, triton=kept, later=later)

    def unknown_release(self, release: str) -> str:
        """Why ``release`` is not a release of this catalog, for a message: out after the as-of, or unknown."""
        if release in self.later:
            return f"a Triton release out by the --as-of ({release} was published {self.later[release]})"
        return f"a Triton release of the catalog ({', '.join(self.triton)})"

    def model(self, query: str, where: str = "--model") -> Model:
        """A model by id, case-insensitively, with or without the org."""
        q = query.strip().lower()
        hits = [m for m in self.models if m.id.lower() == q or m.slug == q]
        if len(hits) != 1:
            known = ", ".join(m.id for m in self.models)
            raise BadInput(where, "model", query, f"one of the catalog's models ({known})")
        return hits[0]

    def models_matching(self, patterns: list[str]) -> list[Model]:
        return [m for m in self.models if any(fnmatch.fnmatch(m.id.lower(), p.lower()) for p in patterns)]


def _shipped_transformers(r: _Release, c: _VllmContainer | None) -> tuple[str | None, str]:
    """The transformers NVIDIA's notes say the release's image ships: its upstream vLLM container's, when that
    container's vLLM is the one the release lists (where the two sources disagree, neither is taken)."""
    if c is None or not r.vllm_shipped:
        return None, ""
    if public_version(c.vllm) != public_version(r.vllm_shipped):
        return None, ""
    return c.transformers, f"NVIDIA vLLM container {c.release} ({c.source}), upstream per {r.upstream_source}"


def published_moment(r: TritonRelease) -> datetime:
    """When a release came out: its catalog date (a day alone is its first instant)."""
    assert r.published is not None, "load_catalog fills in every release's date"
    return moment(r.published)


def _published(r: _Release, where: str, key: str) -> tuple[str, str]:
    """The release's date and its source; where the catalog gives none, inferred as the first day of the month
    after the release's (NGC's monthly releases come out in their month's last days or the next's first), and
    labelled so."""
    if r.published is None:
        yy, mm = (int(p) for p in r.release.split("."))
        year, month = (2000 + yy + mm // 12, mm % 12 + 1)
        return f"{year:04d}-{month:02d}-01", "inferred: the first day of the month after the release's"
    try:
        moment(r.published)
    except ValueError:
        raise BadInput(
            where, key, r.published, "an RFC 3339 time (2026-11-17T18:00:00Z) or a day (2026-11-17)"
        ) from None
    return r.published, r.published_source or ""


def load_catalog(root: Path | None = None) -> Catalog:
    root = root or data_dir()
    gpus_file, models_file, triton_file = root / "gpus.toml", root / "models.toml", root / "triton.toml"
    gpus = {
        g.name: Gpu(g.name, g.memory_gib, g.compute_capability, g.fp8, g.fp4, g.source, g.datacenter)
        for g in load(gpus_file, _Gpus).gpu
    }
    models: list[Model] = []
    seen: dict[str, str] = {}
    for i, m in enumerate(load(models_file, _Models).model):
        model = Model(
            m.id,
            m.variant,
            m.tuning,
            m.quant,
            m.architecture,
            m.model_type,
            m.text_model_type,
            m.params_total_b,
            m.params_active_b,
            tuple(m.modalities),
            m.context_length,
            m.dtype,
            m.weight_bytes,
            m.num_layers,
            m.num_kv_heads,
            m.head_dim,
            m.sliding_window,
            m.num_global_layers,
            m.verified,
            m.source,
        )
        check_id_part(model.slug, str(models_file), f"model[{i}].id")
        if model.slug in seen:
            raise BadInput(
                str(models_file),
                f"model[{i}].id",
                m.id,
                f"a repo name unique in the catalog ({seen[model.slug]} has the same)",
            )
        seen[model.slug] = m.id
        models.append(model)
    tri = load(triton_file, _Triton)
    cuda = load(root / "cuda.toml", _Cuda)
    sets = {
        name: ImportSet(
            name,
            tuple(ImportSpec(i.module, tuple(i.names)) for i in s.imports),
            tuple(CallSpec(c.target, tuple(c.keywords)) for c in s.calls),
            s.source,
            tuple(CallSpec(a.target, tuple(a.names)) for a in s.attributes),
        )
        for name, s in tri.import_sets.items()
    }
    containers = {c.release: c for c in tri.vllm_container}
    releases: dict[str, TritonRelease] = {}
    for i, r in enumerate(tri.release):
        if r.import_set is not None and r.import_set not in sets:
            raise BadInput(
                str(triton_file),
                f"release[{i}].import_set",
                r.import_set,
                f"one of the import sets defined in the file ({', '.join(sorted(sets))})",
            )
        published, published_source = _published(r, str(triton_file), f"release[{i}].published")
        releases[r.release] = TritonRelease(
            r.release,
            r.triton_version,
            r.tritonclient,
            r.vllm_shipped,
            r.cuda,
            r.driver,
            r.python,
            r.import_set,
            r.import_set_inferred,
            r.verified,
            r.source,
            r.upstream,
            *_shipped_transformers(r, containers.get(r.upstream or "")),
            published=published,
            published_source=published_source,
            min_driver=r.min_driver,
            forward_compat=tuple(r.forward_compat),
            driver_source=r.driver_source,
        )
    return Catalog(
        gpus=gpus,
        models=tuple(models),
        triton=releases,
        import_sets=sets,
        extern_imports={n: tuple(s.extern) for n, s in tri.import_sets.items()},
        model_json_keys=tuple(tri.model_json.keys),
        model_json_keys_tp=tuple(tri.model_json.keys_tp),
        cuda={t.cuda: CudaDriver(t.cuda, t.driver, t.source) for t in cuda.toolkit},
        cuda_families={f.major: CudaDriver(f.major, f.driver, f.source) for f in cuda.family},
    )

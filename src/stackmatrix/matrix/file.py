"""The matrix file (``matrix/default.toml`` or the user's): settings, targets, models, stack rules, excludes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from stackmatrix.domain import HostDriver, StackKind, Target
from stackmatrix.errors import BadInput
from stackmatrix.files.embedded import data_dir
from stackmatrix.files.tomlfile import Strict, load
from stackmatrix.ids import check_id_part
from stackmatrix.matrix.catalog import Catalog
from stackmatrix.versions import normalized

SYMBOLS = ("@newest", "@newest-allowed", "@release-day")


def _version_or_symbol(text: str) -> str:
    if text.startswith("@"):
        if text not in SYMBOLS:
            raise ValueError(f"a version or one of {', '.join(SYMBOLS)}")
        return text
    out = normalized(text)
    if out is None:
        raise ValueError("a PEP 440 version, e.g. 0.19.0, or one of " + ", ".join(SYMBOLS))
    return out


VersionItem = Annotated[str, AfterValidator(_version_or_symbol)]


class Range(Strict):
    """Every release on the index (or in the Triton catalog) from ``from`` to ``to``, inclusive."""

    from_: str = Field(alias="from")
    to: str | None = None


class Settings(Strict):
    python: str = Field("3.12", pattern=r"^3\.\d+$")
    platform: Literal["x86_64", "aarch64"] = "x86_64"
    kv_reserve_tokens: int = Field(8192, gt=0, le=100_000_000)
    gpu_memory_utilization: float = Field(0.90, gt=0, le=1)
    overhead_gib: float = Field(1.0, ge=0, le=100_000)


# An NVIDIA driver version as nvidia-smi prints it: a branch and one or two more parts ("550.54.15", "535.86").
DRIVER = r"^[1-9][0-9]{2,3}(\.[0-9]{1,3}){1,2}$"


class TargetSpec(Strict):
    gpu: str
    count: int = Field(gt=0, le=999)
    tp: int = Field(gt=0, le=999)
    driver: str | None = Field(None, pattern=DRIVER)  # the hosts' NVIDIA driver, where the target declares it


class StackRule(Strict):
    kind: StackKind = Field(strict=False)  # a string in TOML; which pins it takes: kinds/<kind>.check_rule
    triton: list[str] | Range | None = None
    vllm: list[VersionItem] | Range | None = None
    transformers: list[VersionItem] | None = None
    note: str = ""


class Exclude(Strict):
    cells: str
    reason: str


class Models(Strict):
    include: list[str]


class MatrixFile(Strict):
    settings: Settings = Field(default_factory=Settings)
    targets: dict[str, TargetSpec]
    models: Models
    stack: list[StackRule]
    exclude: list[Exclude] = Field(default_factory=list)


def default_matrix_path() -> Path:
    return data_dir() / "default.toml"


def check_target(name: str, t: TargetSpec, catalog: Catalog, where: str) -> None:
    """A ``[targets.<name>]`` table (matrix file or policy): the name is an id part, the GPU in the catalog."""
    check_id_part(name, where, f"targets.{name}")
    if t.gpu not in catalog.gpus:
        raise BadInput(where, f"targets.{name}.gpu", t.gpu, f"a GPU of the catalog ({', '.join(catalog.gpus)})")
    if t.tp > t.count:
        raise BadInput(where, f"targets.{name}.tp", t.tp, f"at most the GPU count ({t.count})")


def target_of(name: str, t: TargetSpec, catalog: Catalog, where: str, host: HostDriver | None = None) -> Target:
    """The checked ``[targets.<name>]`` table as a target; a declared driver says which file declared it, and a
    target of a GPU class this host has (``host``, NVML's) takes the host's driver where it declares none."""
    if t.driver:
        return Target(name, catalog.gpus[t.gpu], t.count, t.tp, t.driver, f"{where}: targets.{name}.driver")
    if host is not None and t.gpu in host.gpus:
        return Target(name, catalog.gpus[t.gpu], t.count, t.tp, host.driver, host.source)
    return Target(name, catalog.gpus[t.gpu], t.count, t.tp)


def load_matrix(path: Path, catalog: Catalog) -> MatrixFile:
    spec = load(path, MatrixFile)
    where = str(path)
    for name, t in spec.targets.items():
        check_target(name, t, catalog, where)
    for i, pattern in enumerate(spec.models.include):
        if not catalog.models_matching([pattern]):
            raise BadInput(where, f"models.include[{i}]", pattern, "a glob matching at least one catalog model id")
    for i, rule in enumerate(spec.stack):
        key = f"stack[{i}]"
        releases = (
            rule.triton
            if isinstance(rule.triton, list)
            else ([rule.triton.from_] + ([rule.triton.to] if rule.triton.to else []) if rule.triton else [])
        )
        for r in releases:  # one an as-of leaves out is no error: it is left out of the cells
            if r not in catalog.triton and r not in catalog.later:
                raise BadInput(where, f"{key}.triton", r, catalog.unknown_release(r))
        if isinstance(rule.vllm, Range):
            for end, value in (("from", rule.vllm.from_), ("to", rule.vllm.to)):
                if value is not None and normalized(value) is None:
                    raise BadInput(where, f"{key}.vllm.{end}", value, "a PEP 440 version, e.g. 0.19.0")
        bad = [v for v in (rule.vllm if isinstance(rule.vllm, list) else []) if v.startswith("@") and v != "@newest"]
        if bad:
            raise BadInput(where, f"{key}.vllm", bad[0], "a version, '@newest' or {from, to}")
    return spec

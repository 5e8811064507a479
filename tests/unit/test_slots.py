"""How many ladders a host runs at once, and where: CPU shares, the memory bound, GPUs from the inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackmatrix.domain import Outcome, Reason, Rung, Status
from stackmatrix.executors.slots import CpuSlots, GpuSlots, Need, available_memory, cpu_list, cpu_slots, host_slots
from stackmatrix.gpus.inventory import GIB, GpuInfo, Inventory
from stackmatrix.options import resolve_settings


def test_core_lists_read_as_affinity_tools_write_them() -> None:
    assert [cpu_list(c) for c in ([0], [0, 1, 2, 5], [3, 1, 2], [])] == ["0", "0-2,5", "1-3", ""]


def test_the_default_is_bounded_by_cores_memory_and_ladders(monkeypatch: pytest.MonkeyPatch) -> None:
    from stackmatrix.executors import slots

    monkeypatch.setattr(slots, "host_cores", lambda: (0, 1, 2, 3, 4, 5, 6, 7))
    monkeypatch.setattr(slots, "available_memory", lambda: 13 * GIB)
    assert cpu_slots(None).size == 3  # 13 GiB at 4 GiB a ladder, though 8 cores
    assert cpu_slots(None, ladders=1).size == 1  # a lone ladder gets every core
    assert cpu_slots(6).size == 6 and cpu_slots(6, ladders=2).size == 2  # --jobs, never more than ladders
    assert cpu_slots(None).describe() == "3 CPU slots on 8 cores (8 cores, 13 GiB free at 4 GiB a ladder)"


def test_more_slots_than_cores_share_them_all() -> None:
    slots = CpuSlots(3, [0, 1])
    placement = slots.acquire(Need("a"))
    assert placement is not None and placement.cpus == () and placement.thread_env() == {}


def test_meminfo_is_read_and_its_absence_is_no_crash(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   2097152 kB\n")
    assert available_memory(meminfo) == 2 * GIB
    assert available_memory(tmp_path / "none") is None


def test_a_gpu_host_without_nvml_has_no_slot_for_anything_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from stackmatrix.gpus import inventory

    monkeypatch.setattr(inventory, "read_inventory", lambda nvml=None: Inventory(reason="NVML not found"))
    slots = host_slots(resolve_settings({"device": "gpu"}, {}), 0.9, ladders=4)
    assert "NVML not found" in (slots.never(Need("x", 1, GIB)) or "")


def test_a_shared_cards_failure_is_not_blamed_on_it() -> None:
    gpus = (GpuInfo(0, "GPU-0", "NVIDIA L4", 24 * GIB, 24 * GIB, "a"),)
    slots = GpuSlots(Inventory(gpus=gpus))
    assert slots.acquire(Need("a", 1, 2 * GIB)) and slots.acquire(Need("b", 1, 2 * GIB))
    oom = [Outcome(str(Rung.LOAD), Status.FAIL, Reason.OOM, "CUDA out of memory", {})]
    assert slots.failed("a", oom) is None  # b was on the card too: it may have been b's
    slots.release("b")
    xid = [
        Outcome(str(Rung.LOAD), Status.FAIL, Reason.LOAD_FAILED, "x", {"log_tail": "NVRM: Xid (PCI:0000:01:00): 79"})
    ]
    assert "Xid" in (slots.failed("a", xid) or "") and slots.allocator.failed

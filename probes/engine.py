"""Rungs ``import``, ``tiny``, ``config``, ``load``, ``generate`` and ``serve`` on ONE start of vLLM's OpenAI server.

Runs INSIDE the environment under test (stdlib + the stack). The server (``vllm_server.py``, this probe's child in
its process group) starts first; while it imports the stack, this process builds the tiny checkpoint (when asked:
the server waits for it), reads the checkpoint's config, tokenizer and chat template and computes transformers'
greedy ids (the reference). Then, on the same server:
- ``import``: the server imported torch, transformers and vllm (its marker line), versions as it saw them;
- ``tiny``: the tiny checkpoint was built (``tiny_build.build_once``);
- ``config``: AutoConfig, the tokenizer and the chat template load (read here, while the server started);
- ``load``: the server is up and ``/v1/models`` lists the model;
- ``generate``: ``/v1/completions`` with the prompt's token ids, greedy, ``return_token_ids`` (the sampled ids in
  ``choices[0].token_ids``; a server without it is asked again with ``logprobs`` + ``return_tokens_as_token_ids``,
  each sampled token as ``token_id:N``): those ids must equal transformers' greedy ids (a real checkpoint: at least
  one token, no second copy of it is loaded);
- ``serve``: ``/v1/chat/completions``, plain and streamed.
One line per rung (``_common.rung``); the first failure ends the climb. Argument: JSON with ``model``, ``log`` (the
server's log), ``build`` (the tiny checkpoint's spec, built into ``model``), ``reference``, ``dtype``, ``tp``,
``gpu_memory_utilization``, ``startup_timeout_s``.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import ProbeFailure, rung
from tiny_build import COMPLETE, build_once
from vllm_server import IMPORT_FAILED, IMPORTED, WAIT

HOST = "127.0.0.1"
SERVED = "tiny"
PROMPT = "hello world"
MAX_TOKENS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict[str, Any], timeout: float = 120) -> bytes:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:  # the server's own words on a rejected request
        raise ProbeFailure("server-error", f"{url} answered {exc.code}: {exc.read()[:500]!r}") from None


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


class Server:
    """vLLM's OpenAI server on a free loopback port, started once."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.log = Path(args["log"])
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.deadline = time.monotonic() + float(args.get("startup_timeout_s", 600))
        server = [  # vLLM's OpenAI server's own arguments: a recipe replays them (stackmatrix recipe)
            "--model",
            args["model"],
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--dtype",
            args.get("dtype", "float32"),
            "--enforce-eager",
            "--max-model-len",
            "256",
            "--served-model-name",
            SERVED,
            "--seed",
            "0",
        ]
        if int(args.get("tp", 1)) > 1:
            server += ["--tensor-parallel-size", str(int(args["tp"]))]
        if args.get("gpu_memory_utilization"):
            server += ["--gpu-memory-utilization", str(args["gpu_memory_utilization"])]
        self.server = server
        wait = [WAIT, str(Path(args["model"]) / COMPLETE)] if args.get("build") else []
        cmd = [sys.executable, str(Path(__file__).parent / "vllm_server.py"), *wait, *server]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        self.t0 = time.perf_counter()
        with self.log.open("w") as fh:
            # Same process group as this probe: when the host kills the probe's group, the server goes too.
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)

    def _marker(self) -> tuple[str, dict[str, Any]] | None:
        for line in self.log.read_text(errors="replace").splitlines():
            for marker in (IMPORTED, IMPORT_FAILED):
                if line.startswith(marker):
                    return marker, json.loads(line[len(marker) :])
        return None

    def _wait(self, what: str, done: Callable[[], Any]) -> Any:
        """Poll ``done()`` until it gives a value; the server's exit or the startup deadline is a failure."""
        while True:
            found = done()
            if found is not None:
                return found
            if self.proc.poll() is not None:
                # generic: the host names the cause from the server's log (model type, import, memory)
                raise ProbeFailure(
                    "load-failed",
                    f"the server exited with {self.proc.returncode} before {what}",
                    log_tail=_tail(self.log),
                )
            if time.monotonic() > self.deadline:
                raise ProbeFailure("timeout", f"the server was not {what} in time", log_tail=_tail(self.log))
            time.sleep(0.5)

    def imported(self) -> dict[str, Any]:
        marker, found = self._wait("it had imported the stack", self._marker)
        if marker == IMPORT_FAILED:
            raise ProbeFailure(
                "import-error",
                f"import {found['module']} failed: {found['error']}",
                module=found["module"],
                versions=found.get("versions", {}),
                traceback=found.get("traceback", ""),
            )
        versions = found["versions"]
        self.imported_at = time.perf_counter()
        return {
            "detail": "imports " + ", ".join(f"{k} {v}" for k, v in versions.items()),
            "evidence": {"versions": versions, "python": found.get("python"), "in": "the server process"},
            "duration_s": round(self.imported_at - self.t0, 3),  # the server's own import, not this wait
        }

    def _models(self) -> list[str] | None:
        try:
            with urllib.request.urlopen(f"{self.base}/v1/models", timeout=5) as resp:
                return [str(m.get("id")) for m in json.loads(resp.read()).get("data", [])]
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return None

    def ready(self) -> dict[str, Any]:
        ids = self._wait("it was ready", self._models)
        ready_s = time.perf_counter() - self.t0
        if SERVED not in ids:
            raise ProbeFailure("server-error", f"/v1/models lists {ids}, not the served model")
        return {
            "detail": f"the server was up in {ready_s:.1f}s and lists the model",
            "evidence": {"load_s": round(ready_s, 2), "models": ids, "port": self.port, "server_args": self.server},
            "duration_s": round(time.perf_counter() - getattr(self, "imported_at", self.t0), 3),
        }

    def stop(self) -> None:
        self.proc.terminate()  # vLLM shuts its engine processes down on SIGTERM; the host reaps the group after
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def read_config(model: str) -> dict[str, Any]:
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model)
    except (KeyError, ValueError) as exc:
        raise ProbeFailure("model-type-unknown", f"AutoConfig cannot read the checkpoint: {exc}") from exc
    tok = AutoTokenizer.from_pretrained(model)
    if not tok.chat_template:
        raise ProbeFailure("load-failed", "the tokenizer has no chat template")
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    return {
        "detail": f"{type(config).__name__} ({config.model_type}), {len(tok)} tokens, chat template renders",
        "evidence": {
            "model_type": config.model_type,
            "architectures": config.architectures,
            "vocab": len(tok),
            "rendered": text,
            "prompt_ids": tok.encode(text, add_special_tokens=False),
        },
    }


class Later:
    """Run ``fn`` now; calling this gives its value, or raises what it raised then (at the rung it belongs to,
    after the rungs before it have reported). ``seconds``: how long it took."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        self.value: Any = None
        self.error: BaseException | None = None
        try:
            self.value = fn()
        except BaseException as exc:
            self.error = exc
        self.seconds = round(time.perf_counter() - t0, 3)
        if isinstance(self.value, dict):
            self.value.setdefault("duration_s", self.seconds)

    def __call__(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def token_ids(choice: dict[str, Any]) -> tuple[list[int], str] | None:
    """The sampled ids of a completion choice and how the server gave them, or None where it gave none."""
    if isinstance(choice.get("token_ids"), list):
        return [int(t) for t in choice["token_ids"]], "choices[].token_ids (return_token_ids)"
    tokens = (choice.get("logprobs") or {}).get("tokens") or []
    if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return [int(t.split(":", 1)[1]) for t in tokens], "logprobs.tokens (return_tokens_as_token_ids)"
    return None


# How a server is asked for the ids it sampled, newest first: ``return_token_ids`` (vLLM >= 0.10.2) costs nothing;
# a server without it ignores the field, and is asked for each token's logprob named by its id. Logprobs go
# through a kernel vLLM compiles with torch.compile, which needs a C++ compiler where it runs: asked second.
ASKS = ({"return_token_ids": True}, {"logprobs": 1, "return_tokens_as_token_ids": True})


def generate(server: Server, prompt_ids: list[int], want: list[int] | None, reference_s: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    body = {
        "model": SERVED,
        "prompt": prompt_ids,
        "max_tokens": MAX_TOKENS,
        "min_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "temperature": 0,
    }
    for ask in ASKS:
        choice = json.loads(_post(f"{server.base}/v1/completions", {**body, **ask}))["choices"][0]
        found = token_ids(choice)
        if found is not None:
            break
    else:
        raise ProbeFailure("server-error", f"the completion carries no token ids: {json.dumps(choice)[:500]}")
    got, method = found
    evidence = {
        "prompt_ids": prompt_ids,
        "vllm_ids": got,
        "method": method,
        "generate_s": round(time.perf_counter() - t0, 2),
        "text": choice.get("text"),
    }
    seconds = round(time.perf_counter() - t0 + reference_s, 3)  # the reference was computed for this rung
    if want is None:  # a real checkpoint: no second copy of it to compare with
        if not got:
            raise ProbeFailure("generate-mismatch", "the server generated no token", **evidence)
        return {"detail": f"{len(got)} greedy tokens through the server", "evidence": evidence, "duration_s": seconds}
    evidence["transformers_ids"] = want
    evidence["reference_s"] = reference_s
    if got != want:
        detail = f"served greedy ids {got} != transformers greedy ids {want}"
        raise ProbeFailure("generate-mismatch", detail, **evidence)
    detail = f"{len(got)} greedy tokens through the server equal transformers' ({got})"
    return {"detail": detail, "evidence": evidence, "duration_s": seconds}


def serve(server: Server) -> dict[str, Any]:
    body = {
        "model": SERVED,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "min_tokens": MAX_TOKENS,
        "ignore_eos": True,
    }
    reply = json.loads(_post(f"{server.base}/v1/chat/completions", body))
    text = reply["choices"][0]["message"]["content"]
    if not isinstance(text, str) or not text:
        raise ProbeFailure("server-error", f"empty non-streaming completion: {reply}")
    raw = _post(f"{server.base}/v1/chat/completions", {**body, "stream": True}).decode()
    chunks = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    if not chunks or chunks[-1] != "[DONE]":
        raise ProbeFailure("server-error", "the stream did not end with data: [DONE]", stream=raw[-2000:])
    parsed = [json.loads(c) for c in chunks[:-1]]
    streamed = "".join(p["choices"][0]["delta"].get("content") or "" for p in parsed if p.get("choices"))
    if not streamed:
        raise ProbeFailure("server-error", "the stream carried no content", stream=raw[-2000:])
    return {
        "detail": f"chat completion ({len(text)} chars) and stream ({len(chunks) - 1} chunks) answered",
        "evidence": {"text": text, "streamed": streamed, "stream_matches": streamed == text, "chunks": len(chunks) - 1},
    }


def main() -> None:
    args = json.loads(sys.argv[1])
    model = args["model"]
    server = Server(args)
    try:  # while the server imports and loads:
        tiny = Later(lambda: build_once({**args["build"], "out": model})) if args.get("build") else None
        config = Later(lambda: read_config(model))
        want = Later(lambda: None)
        if args.get("reference", True):
            from hf_greedy import reference_ids

            want = Later(lambda: reference_ids(model, config()["evidence"]["prompt_ids"], MAX_TOKENS))
        if not rung("import", server.imported) or (tiny is not None and not rung("tiny", tiny)):
            return
        if not (rung("config", config) and rung("load", server.ready)):
            return
        prompt_ids = config()["evidence"]["prompt_ids"]
        if rung("generate", lambda: generate(server, prompt_ids, want(), want.seconds)):
            rung("serve", lambda: serve(server))
    finally:
        server.stop()


if __name__ == "__main__":
    main()

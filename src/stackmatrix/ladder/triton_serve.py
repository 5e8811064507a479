"""Rungs ``load``, ``generate`` and ``serve`` through a real tritonserver (the ``triton-python`` stack, and the
Triton path of any stack), in explicit model control: ``/generate`` and ``/generate_stream`` are checked against
transformers' greedy completion, the repository index and the metrics against what was served. A load Triton
refuses is classified from its message and the server log (the stub's traceback is there), else ``load-failed``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stackmatrix.domain import Outcome, Reason, Rung, Status
from stackmatrix.files.embedded import probes_dir
from stackmatrix.ladder.runtime import (
    ENGINE_TIMEOUT,
    Ladder,
    Placement,
    RuntimeContext,
    checkpoint_of,
    find_cause,
    in_order,
    reference_of,
    run_probe,
    rung_outcomes,
)
from stackmatrix.redact import redact, redact_obj
from stackmatrix.runners import Container, Env
from stackmatrix.triton.driver import TritonDriver, TritonError
from stackmatrix.triton.repository import python_model_config, write_model
from stackmatrix.triton.server import ContainerTritonServer, ServerInstall, TritonServer

MODEL = "gemma"
PROMPT = "hello world ! how are you ?"


IMAGE_ENV = Path("/opt/stack")  # the venv images/triton-python/Dockerfile makes with the image's python3


@dataclass(frozen=True)
class ServeSpec:
    server: ServerInstall | Container  # a tritonserver on this host, or the cell's image (which holds one)
    checkpoint: Path
    reference: str | None  # transformers' greedy completion in the same environment (probes/hf_greedy.py)
    work: Path  # repository and server log
    env_root: Path = IMAGE_ENV  # the Python backend's EXECUTION_ENV_PATH: the cell's environment
    max_tokens: int = 8
    gpus: tuple[int, ...] = ()  # a host server's GPU set (a container's are its own)


def python_model(spec: ServeSpec, env_root: Path | None = None) -> dict[str, Any]:
    return python_model_config(MODEL, spec.checkpoint, env_root or spec.env_root, spec.max_tokens)


def server_for(spec: ServeSpec) -> TritonServer:
    """One tritonserver per cell, on its own GPU set (server issue #7786)."""
    repo, log = spec.work / "repository", spec.work / "tritonserver.log"
    if isinstance(spec.server, Container):
        return ContainerTritonServer(spec.server, [spec.checkpoint], ServerInstall.in_image(), repo, log)
    return TritonServer(spec.server, repo, log, gpus=spec.gpus)


def _fail(rung: Rung, reason: Reason, detail: str, evidence: Mapping[str, Any], t0: float) -> Outcome:
    return Outcome(rung, Status.FAIL, reason, redact(detail), redact_obj(dict(evidence)), time.perf_counter() - t0)


def load_failure(exc: TritonError, server: TritonServer, t0: float) -> Outcome:
    log = server.tail(200)
    cause = find_cause(exc.message + "\n" + log)
    last = (exc.message.strip().splitlines() or [""])[-1]
    reason, line = cause if cause else (Reason.LOAD_FAILED, last)
    evidence = {"status": exc.status, "message": exc.message[-2000:], "log_tail": "\n".join(log.splitlines()[-30:])}
    return _fail(Rung.LOAD, reason, f"Triton refused the load (HTTP {exc.status}): {line}", evidence, t0)


def serve_rungs(spec: ServeSpec, override: Mapping[str, Any] | None = None) -> list[Outcome]:
    """``override``: a ModelConfig sent with the load request instead of the written config.pbtxt."""
    model_py = (probes_dir() / "triton_python" / "model.py").read_bytes()
    write_model(spec.work / "repository", python_model(spec), {"model.py": model_py})
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()
    server = server_for(spec)
    with server, TritonDriver(server.url, server.metrics_url) as triton:
        version = triton.server_version()
        try:
            triton.load(MODEL, override)
        except TritonError as exc:
            return [load_failure(exc, server, t0)]
        if not triton.ready(MODEL):
            return [_fail(Rung.LOAD, Reason.LOAD_FAILED, "loaded but not ready", {"log_tail": server.tail()}, t0)]
        outcomes.append(
            Outcome(
                Rung.LOAD,
                Status.PASS,
                None,
                f"tritonserver {version} loaded {MODEL} in explicit mode",
                {"tritonserver": version},
                time.perf_counter() - t0,
            )
        )
        t1 = time.perf_counter()
        try:
            whole = triton.generate(MODEL, PROMPT, max_tokens=spec.max_tokens)
            streamed = triton.generate_stream(MODEL, PROMPT, max_tokens=spec.max_tokens)
        except TritonError as exc:
            outcomes.append(_fail(Rung.GENERATE, Reason.SERVER_ERROR, str(exc), {"log_tail": server.tail()}, t1))
            return outcomes
        completion = whole.text.removeprefix(PROMPT)  # /generate returns the prompt too (exclude_input_in_output)
        evidence = {"generate": whole.text, "generate_stream": streamed.text, "chunks": streamed.chunks}
        if spec.reference is not None and completion != spec.reference:
            outcomes.append(
                _fail(
                    Rung.GENERATE,
                    Reason.GENERATE_MISMATCH,
                    "served text differs from transformers' greedy text",
                    {**evidence, "reference": spec.reference},
                    t1,
                )
            )
            return outcomes
        if streamed.text != completion:
            outcomes.append(
                _fail(Rung.GENERATE, Reason.SERVER_ERROR, "generate_stream differs from generate", evidence, t1)
            )
            return outcomes
        outcomes.append(
            Outcome(
                Rung.GENERATE,
                Status.PASS,
                None,
                f"greedy text equals transformers' ({streamed.chunks} chunks streamed)",
                redact_obj({**evidence, "reference": spec.reference}),
                time.perf_counter() - t1,
            )
        )
        t2 = time.perf_counter()
        metrics = triton.metrics_counting(2)
        index_loaded = triton.index()
        triton.unload(MODEL)
        index_after = triton.index()
        state = {row["name"]: row.get("state") for row in index_after}
        succeeded = metrics.get("nv_inference_request_success", 0.0)
        evidence = {
            "server": server.url,
            "index_loaded": index_loaded,
            "index_after_unload": index_after,
            "requests_succeeded": succeeded,
            "requests_failed": metrics.get("nv_inference_request_failure", 0.0),
        }
        if state.get(MODEL) == "READY" or succeeded < 2:
            outcomes.append(
                _fail(Rung.SERVE, Reason.SERVER_ERROR, "index or metrics disagree with what was served", evidence, t2)
            )
        else:
            outcomes.append(
                Outcome(
                    Rung.SERVE,
                    Status.PASS,
                    None,
                    "ready, generate, generate_stream, index, metrics, unload",
                    evidence,
                    time.perf_counter() - t2,
                )
            )
    return outcomes


def python_backend_rungs(env: Env, rctx: RuntimeContext, ladder: Ladder, placement: Placement) -> list[Outcome]:
    """triton-python: one process imports the stack, builds (or reuses) the checkpoint, reads its config and
    computes transformers' own greedy text (the reference); then the cell's Triton, one server on the ladder's GPU
    set, serves it (load, ready, generate, generate_stream, index, metrics, unload)."""
    outcomes: list[Outcome] = []
    args: dict[str, Any] = {"modules": ["torch", "transformers", "numpy"], "prompt": PROMPT, "max_tokens": 8}
    rungs = [Rung.IMPORT, Rung.CONFIG]
    checkpoint = checkpoint_of(env, rctx, ladder, args, rungs, outcomes)
    # a real checkpoint is served, not compared (its reference would load it twice)
    args.update(model=str(checkpoint), reference=ladder.real is None)
    rctx.report(str(rungs[0]))
    run = run_probe(env, "transformers_rungs.py", args, ENGINE_TIMEOUT, ladder.logs / "transformers.log", placement)
    outcomes = in_order([*outcomes, *rung_outcomes(run, rungs, ladder.logs / "-", frozenset())])
    if any(o.status is not Status.PASS for o in outcomes):  # a rung the probe never reached is failed too
        return outcomes
    reference, failed = reference_of(run, ladder)
    if failed is not None:
        return [*outcomes, failed]
    assert env.container is not None  # the docker runner: Triton runs in the cell's image
    container = replace(env.container, gpus=placement.gpus)  # one tritonserver per GPU set (Triton #7786)
    rctx.report(str(Rung.LOAD))
    return outcomes + serve_rungs(ServeSpec(container, checkpoint, reference, ladder.logs / "triton"))

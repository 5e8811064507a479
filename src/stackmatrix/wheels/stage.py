"""Air-gapped staging: every wheel a set of requirements needs, in one wheelhouse, hash-verified.

uv resolves (``uv pip compile --format pylock.toml`` for the target interpreter and platform); the wheel each
locked package needs on that target is chosen by its tags (``packaging.tags``) and fetched once (or copied from a
find-links folder). Beside the wheels goes ``<lock-hash>.txt``: exact pins with their sha256, which an image build
installs with ``uv pip install --no-index --find-links /wheelhouse --require-hashes`` (no index, no network).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import uv
from packaging.markers import Marker
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from stackmatrix.asof import AsOf, uv_args
from stackmatrix.errors import BadInput, InfraUnavailable
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.options import CONNECT_TIMEOUT_S, READ_TIMEOUT_S
from stackmatrix.redact import redact
from stackmatrix.wheels.uvcache import uv_cache_dir


@dataclass(frozen=True)
class Target:
    """The interpreter and platform the wheels are for: an image's, not necessarily this host's."""

    python: str = "3.12"
    glibc: tuple[int, int] = (2, 36)  # the base image's (Debian 12: 2.36; Ubuntu 24.04, Triton's base: 2.39)
    arch: str = "x86_64"

    @property
    def platform(self) -> str:
        """uv's --python-platform."""
        return f"{self.arch}-manylinux_{self.glibc[0]}_{self.glibc[1]}"

    def environment(self) -> dict[str, str]:
        """PEP 508 marker values of the target, to skip the locked packages it does not need."""
        return {
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "platform_machine": self.arch,
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
        }

    def tags(self) -> list[Tag]:
        """Supported tags, most specific first (manylinux from the newest glibc down, then linux)."""
        major, minor = (int(p) for p in self.python.split("."))
        platforms = [f"manylinux_{self.glibc[0]}_{m}_{self.arch}" for m in range(self.glibc[1], 4, -1)]
        # The legacy aliases (PEP 599/571/513): manylinux2014 = 2_17, manylinux2010 = 2_12, manylinux1 = 2_5.
        platforms += [f"manylinux{alias}_{self.arch}" for alias in ("2014", "2010", "1")] + [f"linux_{self.arch}"]
        return [
            *cpython_tags((major, minor), platforms=platforms),
            *compatible_tags((major, minor), platforms=platforms),
        ]


@dataclass(frozen=True)
class Staged:
    pins: Path  # the requirements file an image installs with --require-hashes
    lock_hash: str
    wheels: tuple[Path, ...]
    fetched_bytes: int


def lock(
    requirements: Sequence[str],
    target: Target,
    *,
    index_url: str,
    overrides: Sequence[str] = (),
    find_links: Path | None = None,
    extra_index: str | None = None,
    cert: Path | None = None,
    cache_dir: Path,
    as_of: AsOf | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stackmatrix-stage-") as tmp:
        req, ovr, out = Path(tmp) / "requirements.in", Path(tmp) / "overrides.txt", Path(tmp) / "pylock.toml"
        req.write_text("\n".join(requirements) + "\n")
        ovr.write_text("\n".join(overrides) + "\n")
        cmd = [uv.find_uv_bin(), "pip", "compile", str(req), "--override", str(ovr), "--format", "pylock.toml"]
        cmd += ["--python-version", target.python, "--python-platform", target.platform, "--quiet", "-o", str(out)]
        cmd += ["--index-url", index_url, "--cache-dir", str(uv_cache_dir(cache_dir, index_url, extra_index))]
        cmd += uv_args(as_of)
        if find_links:
            cmd += ["--find-links", str(find_links)]
        if extra_index:
            cmd += ["--extra-index-url", extra_index, "--index-strategy", "unsafe-best-match"]
        env = {**os.environ, **({"SSL_CERT_FILE": str(cert)} if cert else {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, env=env)
        if proc.returncode != 0:
            raise BadInput(
                "stage", "requirements", " ".join(requirements), f"a set uv can resolve: {redact(proc.stderr[-600:])}"
            )
        return tomllib.loads(out.read_text())


def pick_wheel(package: Mapping[str, Any], tags: Sequence[Tag]) -> Mapping[str, Any]:
    """The locked package's wheel for the target: the one whose tags come first in the target's order."""
    rank = {t: i for i, t in enumerate(tags)}
    best: tuple[int, Mapping[str, Any]] | None = None
    for wheel in package.get("wheels", []):
        name = wheel.get("name") or Path(unquote(urlparse(wheel.get("url", "")).path or wheel.get("path", ""))).name
        score = min((rank[t] for t in parse_wheel_filename(name)[3] if t in rank), default=None)
        if score is not None and (best is None or score < best[0]):
            best = (score, {**wheel, "name": name})
    if best is None:
        raise BadInput("stage", package["name"], package.get("version"), f"a wheel for {tags[0]} (no sdist builds)")
    return best[1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(wheel: Mapping[str, Any], dest: Path, http: httpx.Client, base: Path | None) -> int:
    """Download (or copy from a find-links folder) into ``dest``; the sha256 must match the lock's."""
    want = wheel.get("hashes", {}).get("sha256")
    if dest.exists() and (want is None or _sha256(dest) == want):
        return 0
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        url = str(wheel.get("url", ""))
        if url.startswith("file://"):  # a find-links folder: copy, nothing to fetch
            shutil.copyfile(unquote(urlparse(url).path), tmp)
        elif url:
            with http.stream("GET", wheel["url"]) as r:
                if r.status_code != 200:
                    raise InfraUnavailable(redact(f"{wheel['url']} answered HTTP {r.status_code}"))
                with tmp.open("wb") as fh:
                    for chunk in r.iter_bytes(1 << 20):
                        fh.write(chunk)
        else:
            src = Path(wheel["path"])
            shutil.copyfile(src if src.is_absolute() or base is None else base / src, tmp)
        if want is not None and _sha256(tmp) != want:
            raise InfraUnavailable(f"{dest.name}: sha256 differs from the lock's {want}")
        os.replace(tmp, dest)
        return dest.stat().st_size
    finally:
        tmp.unlink(missing_ok=True)


def stage(
    requirements: Sequence[str],
    wheelhouse: Path,
    target: Target,
    *,
    index_url: str,
    cache_dir: Path,
    overrides: Sequence[str] = (),
    find_links: Path | None = None,
    extra_index: str | None = None,
    cert: Path | None = None,
    timeout: httpx.Timeout | None = None,
    as_of: AsOf | None = None,
) -> Staged:
    """``timeout``: connect and read timeouts for each wheel download (default: the index's, ``wheels/http.py``)."""
    pylock = lock(
        requirements,
        target,
        index_url=index_url,
        overrides=overrides,
        find_links=find_links,
        extra_index=extra_index,
        cert=cert,
        cache_dir=cache_dir,
        as_of=as_of,
    )
    tags = target.tags()
    wheelhouse.mkdir(parents=True, exist_ok=True)
    pins, paths, fetched = [], [], 0
    verify = str(cert) if cert else True
    timeout = timeout or httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    with httpx.Client(timeout=timeout, follow_redirects=True, verify=verify) as http:
        env = target.environment()
        for package in sorted(pylock.get("packages", []), key=lambda p: p["name"]):
            if package.get("marker") and not Marker(package["marker"]).evaluate(env):
                continue
            wheel = pick_wheel(package, tags)
            dest = wheelhouse / wheel["name"]
            try:
                fetched += _fetch(wheel, dest, http, find_links)
            except httpx.HTTPError as exc:
                raise InfraUnavailable(redact(f"cannot fetch {wheel.get('url')} — {exc!r}")) from None
            paths.append(dest)
            sha = wheel.get("hashes", {}).get("sha256") or _sha256(dest)
            # The file name rides along as a comment: several wheels of one version can share a wheelhouse.
            pins.append(f"{package['name']}=={package['version']} --hash=sha256:{sha}  # {dest.name}")
    text = "\n".join(pins) + "\n"
    digest = hashlib.sha256(f"{target}\n{text}".encode()).hexdigest()[:16]
    pin_file = wheelhouse / f"{digest}.txt"
    atomic_write_text(pin_file, text)
    return Staged(pin_file, digest, tuple(paths), fetched)

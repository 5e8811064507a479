"""Who the registry is told we are: credentials from ``--registry-auth`` or Docker's ``config.json`` (never logged,
masked in every message), and the challenge a registry answers 401 with (``WWW-Authenticate``)."""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path

from stackmatrix.errors import BadInput
from stackmatrix.files.readfile import read_json
from stackmatrix.redact import register_secret

HIDDEN = "<hidden>"  # what a message shows instead of a value that may hold a password
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]]+(:\d{1,5})?$")
_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^,\s]+)')


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    source: str  # the flag, variable or file they came from: what an error about them names

    def __repr__(self) -> str:  # never the password, not even in a debugger's dump
        return f"Credentials(user={self.user!r}, source={self.source!r})"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="…",service="…",scope="…"`` or ``Basic realm="…"``; None for anything else."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "basic"):
        return None
    params = {m[0] or m[2]: m[1] or m[3] for m in _PARAM.findall(rest)}
    return Challenge(scheme.lower(), params)


@dataclass(frozen=True)
class RegistryAuth:
    """``--registry-auth``: credentials for one registry (``host``) or every one (None). Shown and stored as
    ``user@host`` only: the password never leaves memory."""

    host: str | None
    user: str
    password: str

    @classmethod
    def parse(cls, where: str, value: str) -> RegistryAuth:
        """``[HOST=]USER:PASSWORD``; the value is never echoed in an error: it holds a password."""
        host, eq, rest = value.partition("=")
        if not eq or not _HOST.match(host.strip()):  # "=" may be part of the password
            host, rest = "", value
        user, colon, password = rest.partition(":")
        if not colon or not user or not password or any(c in value for c in "\r\n"):
            raise BadInput(where, "value", HIDDEN, "[HOST=]USER:PASSWORD (a registry's user and password or token)")
        register_secret(password)
        return cls(host.strip() or None, user, password)

    def __str__(self) -> str:
        return f"{self.user}@{self.host or '*'}"

    def __repr__(self) -> str:
        return f"RegistryAuth({self})"


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


def from_docker_config(registry: str, path: Path | None = None) -> Credentials | None:
    """The ``auths`` entry Docker's ``docker login`` wrote for ``registry`` (``auth`` or ``username``/``password``),
    or None. A credential helper (``credsStore``) is not run: name the credentials with --registry-auth instead."""
    path = path or docker_config_path()
    if not path.exists():
        return None
    data = read_json(path, "Docker's client configuration")
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    keys = _HUB_KEYS if registry == "docker.io" else (registry, f"https://{registry}", f"http://{registry}")
    for key in keys:
        entry = auths.get(key) or auths.get(key.rstrip("/"))
        if not isinstance(entry, dict):
            continue
        user, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise BadInput(str(path), f"auths.{key}.auth", HIDDEN, "base64 of USER:PASSWORD") from None
        if isinstance(user, str) and isinstance(password, str) and user and password:
            register_secret(password)
            return Credentials(user, password, f"{path} (auths.{key})")
    return None


def credentials_for(registry: str, given: RegistryAuth | None, flag: str) -> Credentials | None:
    """The flag's credentials when they name this registry (or every registry), else Docker's config."""
    if given is not None and given.host in (None, registry):
        return Credentials(given.user, given.password, flag)
    return from_docker_config(registry)

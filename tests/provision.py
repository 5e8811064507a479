"""What the tests need from the host, declared once, and the step that provides it before pytest runs.

A test that drives a real service carries that service's marker (pyproject's ``[tool.pytest.ini_options]``).
``nox -s tests`` runs this module first: a missing service is installed with Debian's packages (one ``apt-get
install`` for all of them) and a daemon is started, so the README's test command passes on a fresh Debian 12 host
as root. Where it cannot (not root, no apt-get) it stops with one line naming what is missing and the command that
installs it: a missing service is a provisioning failure, never a wall of test failures and never a skip.

``STACKMATRIX_TEST_SERVICES=present`` opts out: nothing is installed or started, and the tests whose services are
not here are deselected (``conftest.py``), named in pytest's summary. Stdlib only: it runs before the test
dependencies are installed, and as ``sudo python3 -m tests.provision`` with the system's Python."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MODE_ENV = "STACKMATRIX_TEST_SERVICES"
MODES = ("all", "present")
OPT_OUT = f"{MODE_ENV}=present python3 -m nox -s tests"
EXIT_MISSING = 4  # the design's "infrastructure unavailable"
LOG_DIR = Path(tempfile.gettempdir()) / "stackmatrix-services"
DOCKERD_WAIT_S = 60.0
APT_TIMEOUT_S = 1800
CHROMIUM = Path("/usr/bin/chromium")  # the path the browser test launches: Playwright never downloads a browser here
# The Python backend's stub links the shared libpython of the interpreter that made its environment (FACTS §7).
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
LATEX_STYLES = ("geometry.sty", "booktabs.sty", "longtable.sty", "amssymb.sty", "graphicx.sty", "multicol.sty")


class ProvisionError(Exception):
    """One line for the user: what is missing or failed, and what to do."""


@dataclass(frozen=True)
class Service:
    name: str
    markers: tuple[str, ...]  # a test carrying one of these needs the service
    packages: tuple[str, ...]  # the Debian packages that install it
    installed: Callable[[], bool]
    answers: Callable[[], bool] | None = None  # a daemon: ready only when it answers
    start: Callable[[], None] | None = None  # starts the daemon and waits for it, or raises ProvisionError

    def ready(self) -> bool:
        return self.installed() and (self.answers is None or self.answers())

    def describe(self) -> str:
        state = "installed, not answering" if self.installed() else "not installed"
        return f"{self.name} ({'/'.join(self.markers)} tests; {state})"


def _on_path(*tools: str) -> Callable[[], bool]:
    return lambda: all(shutil.which(tool) for tool in tools)


def _latex() -> bool:
    """pdflatex and every package the LaTeX report loads (booktabs comes with texlive-latex-recommended)."""
    kpsewhich = shutil.which("kpsewhich")
    if not (shutil.which("pdflatex") and kpsewhich):
        return False
    proc = subprocess.run([kpsewhich, *LATEX_STYLES], capture_output=True, text=True, timeout=60, check=False)
    return len(proc.stdout.split()) == len(LATEX_STYLES)


def _debian_python() -> bool:
    return SYSTEM_PYTHON.exists() and ctypes.util.find_library("python3.11") is not None


def _engine_socket() -> str | None:
    """The engine's Unix socket as the docker SDK finds it (DOCKER_HOST), or None for a remote engine."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host.removeprefix("unix://") if host.startswith("unix://") else None


def _engine_answers() -> bool:
    path = _engine_socket()
    if path is None:
        return True  # a remote engine the user chose: the docker tests reach it, or say why not
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def _clear_stale_pid_file(path: Path = Path("/var/run/docker.pid")) -> None:
    """A dockerd that died (a machine stopped mid-run) leaves its pid file, and a new one refuses to start over
    it: removed when no process of that pid is a dockerd."""
    try:
        pid = int(path.read_text().strip())
        alive = Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except (OSError, ValueError):
        alive = False
    if not alive and path.exists():
        print(f"provision: removing {path}, left by a dockerd that is gone", flush=True)
        path.unlink()


def _start_dockerd() -> None:
    """In the background, in its own session (it outlives this step and serves pytest), its log under LOG_DIR."""
    log = LOG_DIR / "dockerd.log"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    _clear_stale_pid_file()
    print(f"provision: starting dockerd (log: {log})", flush=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [shutil.which("dockerd") or "dockerd"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + DOCKERD_WAIT_S
    while not _engine_answers():
        if proc.poll() is not None:
            raise ProvisionError(f"dockerd exited with status {proc.returncode}; its log: {log}")
        if time.monotonic() > deadline:
            raise ProvisionError(f"dockerd did not answer within {DOCKERD_WAIT_S:.0f} s; its log: {log}")
        time.sleep(0.5)


SERVICES: tuple[Service, ...] = (
    Service("chromium", ("browser",), ("chromium",), CHROMIUM.exists),
    Service("pdflatex", ("latex",), ("texlive-latex-base", "texlive-latex-recommended"), _latex),
    Service("dockerd", ("docker",), ("docker.io",), _on_path("dockerd"), _engine_answers, _start_dockerd),
    # The docker tests make their base image with debootstrap: no registry is needed.
    Service("debootstrap", ("docker",), ("debootstrap",), _on_path("debootstrap")),
    Service("python3.11", ("triton",), ("python3.11", "libpython3.11"), _debian_python),
    # The CNCF distribution registry; the tests start their own instances on loopback, openssl signs their tokens.
    # A single-node cluster the tests start in a private directory (tests/slurm.py): controller, node, munge.
    Service("slurm", ("slurm",), ("slurm-wlm", "munge"), _on_path("slurmctld", "slurmd", "munged", "sbatch")),
    Service("docker-registry", ("registry",), ("docker-registry", "openssl"), _on_path("docker-registry", "openssl")),
)


def needed_by(markers: Iterable[str]) -> list[Service]:
    wanted = set(markers)
    return [s for s in SERVICES if wanted.intersection(s.markers)]


def packages_of(services: Iterable[Service]) -> list[str]:
    return [p for s in services if not s.installed() for p in s.packages]


def missing_line(missing: Sequence[Service]) -> str:
    """The one line: what is missing, the command that installs and starts it, and the opt-out."""
    what = ", ".join(s.describe() for s in missing)
    packages = " ".join(packages_of(missing))
    if shutil.which("apt-get"):
        sudo = "" if os.geteuid() == 0 else "sudo "
        fix = f"provide them with: {sudo}python3 -m tests.provision"
        fix += f" (it runs apt-get install {packages})" if packages else ""
    else:
        fix = f"no apt-get here: install what Debian calls {packages}" if packages else "start them"
    return f"tests need what this host lacks: {what}; {fix}; or run only the tests it can: {OPT_OUT}"


def _apt_install(packages: Sequence[str]) -> None:
    log = LOG_DIR / "apt-get.log"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    print(f"provision: apt-get install {' '.join(packages)} (a few minutes; log: {log})", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # The package lists of a fresh host are stale or absent; updated only when something is installed.
    steps = (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *packages])
    with log.open("wb") as out:
        for cmd in steps:
            try:
                code = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=APT_TIMEOUT_S
                ).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ProvisionError(f"{' '.join(cmd[:2])} failed: {exc}; its log: {log}") from None
            if code:
                raise ProvisionError(f"{' '.join(cmd[:2])} exited with status {code}; its log: {log}")


def provision(services: Sequence[Service]) -> None:
    """Install what is missing, start what is not running, and check every service answers; fast when all do."""
    missing = [s for s in services if not s.ready()]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ProvisionError(missing_line(missing))
    if packages := packages_of(missing):
        _apt_install(packages)
    for service in missing:
        if service.start is not None and not service.ready():
            service.start()
    if still := [s for s in missing if not s.ready()]:
        raise ProvisionError(f"still missing after installing: {', '.join(s.describe() for s in still)}")


def main() -> int:
    mode = os.environ.get(MODE_ENV, "all")
    if mode not in MODES:
        print(f"provision: {MODE_ENV}={mode!r}: expected one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    if mode == "present":
        return 0  # conftest.py deselects the tests whose services are not here
    try:
        provision(SERVICES)
    except ProvisionError as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

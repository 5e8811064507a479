"""The tritonserver this host can run: the one bundled in the ``nvidia-pytriton`` wheel (2.51.0 in 0.5.14-0.7.0,
the Triton 24.10 server; FACTS §7), installed once under the cache with uv, without its Python dependencies
(only the binary, its libraries, the Python backend and its stubs are used)."""

from __future__ import annotations

import ctypes.util
import shutil
import subprocess
from functools import cache
from pathlib import Path

import uv

from stackmatrix.errors import InfraUnavailable
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.triton.server import ServerInstall
from stackmatrix.wheels.uvcache import uv_cache_dir

PYTRITON = "0.7.0"
SERVER_VERSION = "2.51.0"  # what PYTRITON bundles (FACTS §7): the stand-in's evidence names it
COMPLETE = ".complete"
# What an environment run by this server's Python backend must hold whatever its stack declares: its 2.51 stub
# cannot take numpy 2 (FACTS §7: STRING inputs crash it).
STUB_OVERRIDES = ("numpy<2",)
STUB_PYTHONS = ("3.13", "3.12", "3.11", "3.10", "3.9", "3.8")  # the stubs the wheel carries, newest first


@cache
def stub_python() -> tuple[str, str] | None:
    """(interpreter, version): a Python on this host whose shared libpython the server's stub can link, so an
    environment it makes can run under the stand-in tritonserver (Debian's /usr/bin/python3.X with its
    libpython3.X package); None when there is none."""
    for version in STUB_PYTHONS:
        path = Path(f"/usr/bin/python{version}")
        if path.is_file() and ctypes.util.find_library(f"python{version}"):
            return str(path), version
    return None


# The stub embeds its interpreter isolated, in the C locale: every open() without an encoding reads ASCII, and
# vLLM's import reads UTF-8 files so (torch's inductor templates). A .pth line in the environment it runs sets the
# locale's character type before anything else is imported.
LOCALE_PTH = "00-stackmatrix-stub-locale.pth"
LOCALE_LINE = 'import locale; locale.setlocale(locale.LC_CTYPE, "C.UTF-8")\n'


def prepare_stub_env(root: Path, python: str) -> None:
    """Make a venv (``root``, made by Python ``python``) fit to run under the stand-in's stub."""
    pth = root / "lib" / f"python{python}" / "site-packages" / LOCALE_PTH
    if not pth.is_file() or pth.read_text() != LOCALE_LINE:
        atomic_write_text(pth, LOCALE_LINE)


def stub_python_missing() -> str:
    return (
        "no Python with a shared libpython for the stand-in tritonserver's Python backend "
        f"(/usr/bin/python3.X, from {STUB_PYTHONS[-1]} to {STUB_PYTHONS[0]}, with its libpython3.X: e.g. "
        "apt-get install python3.11 libpython3.11)"
    )


def ensure_server(cache_dir: Path, python: str, index_url: str, version: str = PYTRITON) -> ServerInstall:
    """``python``: the version of the interpreter the Python backend will run (its stub is chosen to match)."""
    root = cache_dir / "tritonserver" / f"nvidia-pytriton-{version}"
    if not (root / COMPLETE).exists():
        shutil.rmtree(root, ignore_errors=True)
        cmd = [uv.find_uv_bin(), "pip", "install", "--target", str(root), "--no-deps", "--index-url", index_url]
        cmd += ["--cache-dir", str(uv_cache_dir(cache_dir, index_url)), f"nvidia-pytriton=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise InfraUnavailable(f"cannot install nvidia-pytriton {version}: {(proc.stderr or proc.stdout)[-800:]}")
        atomic_write_text(root / COMPLETE, version)
    return ServerInstall.from_pytriton(root / "pytriton" / "tritonserver", python)

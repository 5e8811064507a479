"""The tritonserver this host can run: the one bundled in the ``nvidia-pytriton`` wheel (2.51.0 in 0.5.14-0.7.0,
the Triton 24.10 server; FACTS §7), installed once under the cache with uv, without its Python dependencies
(only the binary, its libraries, the Python backend and its stubs are used)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import uv

from stackmatrix.atomic import atomic_write_text
from stackmatrix.errors import InfraUnavailable
from stackmatrix.triton.server import ServerInstall
from stackmatrix.uvcache import uv_cache_dir

PYTRITON = "0.7.0"
COMPLETE = ".complete"


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

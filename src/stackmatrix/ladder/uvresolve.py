"""``--resolve full``: ask ``uv`` to resolve the whole dependency tree of a stack's pins.

The declared check reads vLLM's bound on transformers; uv also finds conflicts deeper in the tree (tokenizers,
huggingface-hub, torch) and fails the way ``pip install`` inside an image would.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import uv

from stackmatrix.asof import uv_args
from stackmatrix.options import Settings
from stackmatrix.wheels.uvcache import uv_cache_dir

TIMEOUT_S = 300


@dataclass(frozen=True)
class UvResult:
    ok: bool
    command: list[str]
    tail: str  # the last lines uv printed (the resolver's explanation on failure)
    pins: dict[str, str]


def uv_resolve(
    requirements: list[str], overrides: list[str], python: str, settings: Settings, platform: str = "x86_64"
) -> UvResult:
    with tempfile.TemporaryDirectory(prefix="stackmatrix-uv-") as tmp:
        req, ovr = Path(tmp) / "requirements.in", Path(tmp) / "overrides.txt"
        req.write_text("\n".join(requirements) + "\n")
        cmd = [
            uv.find_uv_bin(),
            "pip",
            "compile",
            str(req),
            "--python-version",
            python,
            "--python-platform",
            f"{platform}-manylinux_2_28",
            "--no-header",
            "--no-annotate",
            "--quiet",
            "--cache-dir",
            str(uv_cache_dir(settings.cache_dir, settings.index_url)),
            "--index-url",
            settings.index_url,
        ]
        if overrides:
            ovr.write_text("\n".join(overrides) + "\n")
            cmd += ["--override", str(ovr)]
        if settings.find_links:
            cmd += ["--find-links", str(settings.find_links)]
        if settings.offline:
            cmd.append("--offline")
        cmd += uv_args(settings.as_of)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return UvResult(False, cmd, f"uv did not finish in {TIMEOUT_S}s", {})
    pins = {}
    for line in proc.stdout.splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            pins[name.strip()] = version.split(";")[0].strip()
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    return UvResult(proc.returncode == 0, cmd, tail, pins)

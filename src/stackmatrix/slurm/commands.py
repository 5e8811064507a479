"""Slurm's client commands, run with timeouts: a missing command or a controller that does not answer is exit 4
with Slurm's own message; a partition the cluster does not have is exit 2 naming the flag."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stackmatrix.errors import BadInput, InfraUnavailable
from stackmatrix.redact import redact

TIMEOUT_S = 60.0
# What Slurm's clients print when the controller cannot be reached (slurm_*_msg errors)
_UNREACHABLE = ("Unable to contact slurm controller", "Connection refused", "Socket timed out", "Zero Bytes")


@dataclass(frozen=True)
class Slurm:
    """The cluster as its clients see it: the environment they run with (``SLURM_CONF`` among it)."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    timeout: float = TIMEOUT_S

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        conf = self.env.get("SLURM_CONF")
        if conf is not None and not os.path.isfile(conf):  # Slurm's clients would retry it for a minute
            raise BadInput("env SLURM_CONF", "path", conf, "Slurm's configuration file (slurm.conf), which exists")
        path = shutil.which(tool, path=self.env.get("PATH"))
        if path is None:
            raise InfraUnavailable(f"{tool} is not installed here: the slurm executor needs Slurm's client commands")
        try:
            proc = subprocess.run(
                [path, *args], env=dict(self.env), capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise InfraUnavailable(f"{tool} did not answer within {self.timeout:.0f} s") from None
        except OSError as exc:
            raise InfraUnavailable(f"{tool} could not run: {exc.strerror}") from None
        if check and proc.returncode:
            raise _failed(tool, proc)
        return proc

    def partition(self, name: str, where: str = "--partition") -> str:
        """``name`` when the cluster has that partition; exit 2 naming ``where`` otherwise."""
        proc = self.run("sinfo", "-h", "-o", "%R", check=False)
        if proc.returncode:
            raise _failed("sinfo", proc)
        known = sorted({p.strip().rstrip("*") for p in proc.stdout.split()})
        if name not in known:
            raise BadInput(where, "partition", name, f"a partition of this cluster ({', '.join(known) or 'none'})")
        return name

    def submit(self, argv: Sequence[str]) -> str:
        """``sbatch --parsable …``: the job id; a refusal is exit 4 with Slurm's message."""
        proc = self.run("sbatch", "--parsable", *argv, check=False)
        if proc.returncode:
            raise _failed("sbatch", proc, "refused the job")
        return proc.stdout.strip().split(";")[0]


def _message(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
    text = lines[-1] if lines else f"exit status {proc.returncode}"
    return text.removeprefix("sbatch: error: ").removeprefix("error: ")[:500]


def _failed(tool: str, proc: subprocess.CompletedProcess[str], what: str = "failed") -> InfraUnavailable:
    message = _message(proc)
    if any(m in message for m in _UNREACHABLE):
        return InfraUnavailable(redact(f"the Slurm controller cannot be reached ({tool}: {message})"))
    return InfraUnavailable(redact(f"{tool} {what}: {message}"))

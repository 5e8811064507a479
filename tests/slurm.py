"""A real single-node Slurm for the tests (Debian's ``slurm-wlm`` and ``munge``, FACTS §10): controller and node on
this machine, started in a private directory with their own ports, munge socket and state, so nothing of a site's
own Slurm is touched. Four placeholder device files stand for GPUs (``Gres=gpu:4``): Slurm schedules by them but
sets no ``CUDA_VISIBLE_DEVICES`` for them. Clients find the cluster through ``SLURM_CONF``."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stackmatrix.triton.server import free_port

GPUS = 4
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def _memory_mb() -> int:
    text = Path("/proc/meminfo").read_text()
    available = int(re.search(r"MemAvailable:\s+(\d+)", text).group(1)) // 1024  # type: ignore[union-attr]
    return max(1024, int(available * 0.5))


@dataclass(frozen=True)
class Cluster:
    root: Path
    node: str
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as key=value pairs (the controller keeps a finished job for MinJobAge)."""
        out = self.run("scontrol", "show", "job", job_id, "--oneliner").stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def stop_node(self) -> None:
        """Kill slurmd as a lost node would: the controller marks it down after SlurmdTimeout."""
        _kill(self.root / "slurmd.pid")

    def start_node(self) -> None:
        subprocess.run([shutil.which("slurmd") or "slurmd", "-f", str(self.conf)], env=self.env, check=True)
        self.run("scontrol", "update", f"nodename={self.node}", "state=resume")


def _pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _kill(pid_file: Path, wait: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the daemon is still there after ``wait`` seconds."""
    pid = _pid(pid_file)
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def cluster(root: Path) -> Iterator[Cluster]:
    root.mkdir(parents=True, exist_ok=True)
    for d in ("state", "spool", "log", "dev"):
        (root / d).mkdir(exist_ok=True)
    for i in range(GPUS):
        (root / "dev" / f"gpu{i}").touch()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=stackmatrix-test",
                f"SlurmctldHost={node}",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "AuthType=auth/munge",
                "CryptoType=crypto/munge",
                f"AuthInfo=socket={root}/munge.sock",
                f"StateSaveLocation={root}/state",
                f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid",
                f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/log/slurmctld.log",
                f"SlurmdLogFile={root}/log/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "SchedulerType=sched/backfill",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "ReturnToService=2",
                "MinJobAge=3600",
                "SlurmdTimeout=10",
                "GresTypes=gpu",
                f"NodeName={node} CPUs={os.cpu_count() or 1} RealMemory={_memory_mb()} Gres=gpu:{GPUS} State=UNKNOWN",
                f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    (root / "gres.conf").write_text(f"NodeName={node} Name=gpu File={root}/dev/gpu[0-{GPUS - 1}]\n")
    munged = [shutil.which("munged") or "munged", f"--key-file={key}", f"--socket={root}/munge.sock"]
    munged += [f"--pid-file={root}/munged.pid", f"--log-file={root}/log/munged.log", f"--seed-file={root}/seed"]
    subprocess.run([*munged, "--force"], check=True, capture_output=True)
    c = Cluster(root, node, conf)
    try:
        subprocess.run([shutil.which("slurmctld") or "slurmctld", "-f", str(conf)], env=c.env, check=True)
        subprocess.run([shutil.which("slurmd") or "slurmd", "-f", str(conf)], env=c.env, check=True)
        deadline = time.monotonic() + 30
        while "idle" not in c.run("sinfo", "-h", "-o", "%t").stdout:
            if time.monotonic() > deadline:
                logs = (root / "log" / "slurmctld.log").read_text()[-2000:]
                raise RuntimeError(f"the test cluster did not come up: {logs}")
            time.sleep(0.3)
        yield c
    finally:
        c.run("scancel", "--full", "-u", "root")
        c.run("scontrol", "shutdown")
        for pid in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            _kill(root / pid)

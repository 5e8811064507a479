"""The slurm executor on the real single-node cluster of the tests (tests/slurm.py: Debian's slurm-wlm and munge,
controller and node on this machine) against the local executor, in the same run and on the same warm caches:

1. per-task overhead: a selection of a few static cells whose facts are all cached (each task's own work is a
   few milliseconds), through an array of one task per cell; from scontrol's times, submit -> start -> end per
   task, and the submitter's wall time until every record is in the journal, against the local run's;
2. the whole default matrix (static tier) through a 4-task array against the local run.

Run with ``nox -s bench -- slurm [--poll S]``. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.slurm import Cluster, cluster  # noqa: E402

from stackmatrix.cli import main as stackmatrix  # noqa: E402
from stackmatrix.store import run_dirs  # noqa: E402

FEW = "vllm-0.3*__gemma-4-e2b-it__l4x1"  # 8 cells, 8 tasks


def timed(argv: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = stackmatrix(argv)
    return code, time.perf_counter() - t0


def slurm_times(c: Cluster, job: str) -> list[tuple[float, float]]:
    """Per task of an array: (submit -> start, start -> end) in seconds (scontrol's times have 1 s steps)."""
    out = c.run("scontrol", "show", "job", job, "--oneliner").stdout
    rows = []
    for line in out.splitlines():
        f = dict(re.findall(r"(\w+)=(\S*)", line))
        t = {k: datetime.fromisoformat(f[k]).timestamp() for k in ("SubmitTime", "StartTime", "EndTime")}
        rows.append((t["StartTime"] - t["SubmitTime"], t["EndTime"] - t["StartTime"]))
    return rows


def newest(reports: Path) -> Path:
    return run_dirs(reports)[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--poll", type=float, default=0.5, help="--slurm-poll of the submitter (default 0.5 s)")
    args = p.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["STACKMATRIX_CACHE_DIR"] = str(tmp / "cache")
        os.environ["STACKMATRIX_SLURM_POLL"] = str(args.poll)
        with cluster(tmp / "cluster") as c:
            os.environ["SLURM_CONF"] = str(c.conf)
            print(f"cluster: slurm-wlm on this host, {os.cpu_count()} CPUs, poll {args.poll} s")
            only = ["--only", FEW]
            code, cold = timed(["run", *only, "--reports-dir", str(tmp / "warm")])  # the caches made warm
            cells = len((newest(tmp / "warm") / "journal.jsonl").read_text().splitlines())
            print(f"warm-up (local, cold caches): {cold:.2f} s for {cells} cells, exit {code}")

            local = [timed(["run", *only, "--reports-dir", str(tmp / "local"), "--fresh"])[1] for _ in range(3)]
            slurm = []
            per_task: list[tuple[float, float]] = []
            for _ in range(3):
                argv = ["run", *only, "--reports-dir", str(tmp / "slurm"), "--fresh", "--executor", "slurm"]
                code, seconds = timed([*argv, "--slurm-tasks", str(cells)])
                assert code == 0, code
                slurm.append(seconds)
                (job,) = json.loads((newest(tmp / "slurm") / "run.json").read_text())["slurm"]["jobs"]
                per_task += slurm_times(c, job)
            lm, sm = statistics.median(local), statistics.median(slurm)
            queue = statistics.median(t[0] for t in per_task)
            work = statistics.median(t[1] for t in per_task)
            print(f"\n1. {cells} cells, warm caches, one array task per cell ({len(per_task)} tasks over 3 runs)")
            print(f"   local executor:  {lm:.2f} s per run (median of 3)")
            print(f"   slurm executor:  {sm:.2f} s per run (median of 3): submit, wait, fold, store, render")
            print(f"   per task: submit -> start {queue:.0f} s, start -> end {work:.0f} s (the worker: expand, probe)")
            over = sm - lm
            print(f"   overhead: {over:.2f} s per run, {over / cells:.2f} s per task; ratio slurm/local {sm / lm:.1f}")

            code, local_all = timed(["run", "--reports-dir", str(tmp / "local-all")])
            total = len((newest(tmp / "local-all") / "journal.jsonl").read_text().splitlines())
            argv = ["run", "--reports-dir", str(tmp / "slurm-all"), "--executor", "slurm", "--slurm-tasks", "4"]
            code2, slurm_all = timed(argv)
            job = json.loads((newest(tmp / "slurm-all") / "run.json").read_text())["slurm"]["jobs"][0]
            tasks = slurm_times(c, job)
            same = (newest(tmp / "local-all") / "journal.jsonl").read_text().count('"verdict"') == total
            print(f"\n2. the whole default matrix, static tier, {total} cells (exit {code} local, {code2} slurm)")
            print(f"   local executor:       {local_all:.2f} s")
            print(
                f"   slurm, 4-task array:  {slurm_all:.2f} s; tasks start -> end: "
                + ", ".join(f"{t[1]:.0f} s" for t in tasks)
            )
            print(f"   ratio slurm/local {slurm_all / local_all:.2f} ({os.cpu_count()} CPUs: 2 tasks at a time here)")
            print(
                f"   records: {len((newest(tmp / 'slurm-all') / 'journal.jsonl').read_text().splitlines())}"
                f" in the slurm run's journal, {total} in the local run's{'' if same else ' (!)'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The slurm executor on the real single-node cluster of the tests (tests/slurm.py: Debian's slurm-wlm and munge,
controller and node on this machine) against the local executor, in the same run and on the same warm caches:

1. per-task overhead: static cells whose facts are all cached (a task's own work is the matrix expanded and a
   few milliseconds of probing), one cell in one task, then 8 cells in 8 tasks; from scontrol's times, submit ->
   start -> end per task, and the submitter's wall time until every record is stored, against the local run's;
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

from stackmatrix.cli.main import main as stackmatrix  # noqa: E402
from stackmatrix.store.runs import run_dirs  # noqa: E402

FEW = "vllm-0.3*__gemma-4-e2b-it__l4x1"  # 8 cells, 8 tasks
ONE = "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1"


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


def verdicts(run_dir: Path) -> dict[str, tuple[str, str | None, str]]:
    rows = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    return {r["cell"]: (r["verdict"], r.get("reason"), r["fingerprint"]) for r in rows}


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

            def compare(cells_only: list[str], tasks: int, label: str) -> None:
                local = [
                    timed(["run", *cells_only, "--reports-dir", str(tmp / "local"), "--fresh"])[1] for _ in range(3)
                ]
                slurm, per_task = [], []
                for _ in range(3):
                    argv = ["run", *cells_only, "--reports-dir", str(tmp / "slurm"), "--fresh", "--executor", "slurm"]
                    code, seconds = timed([*argv, "--slurm-tasks", str(tasks)])
                    assert code == 0, code
                    slurm.append(seconds)
                    (job,) = json.loads((newest(tmp / "slurm") / "run.json").read_text())["slurm"]["jobs"]
                    per_task += slurm_times(c, job)
                lm, sm = statistics.median(local), statistics.median(slurm)
                queue = statistics.median(t[0] for t in per_task)
                work = statistics.median(t[1] for t in per_task)
                print(f"\n{label} ({len(per_task)} tasks over 3 runs, warm caches)")
                print(f"   local executor:  {lm:.2f} s per run (median of 3)")
                print(f"   slurm executor:  {sm:.2f} s per run (median of 3): submit, wait, fold, store, render")
                print(f"   per task (scontrol, 1 s steps): submit -> start {queue:.0f} s, start -> end {work:.0f} s")
                over = sm - lm
                print(f"   overhead {over:.2f} s per run, {over / tasks:.2f} s per task; slurm/local {sm / lm:.1f}")

            compare(["--only", ONE], 1, "1a. one cell, one task: the overhead of a task")
            compare(only, cells, f"1b. {cells} cells, one task each (2 at a time on this node)")

            timed(["run", "--reports-dir", str(tmp / "warm")])  # every stack's facts cached
            code, local_all = timed(["run", "--reports-dir", str(tmp / "local-all")])
            argv = ["run", "--reports-dir", str(tmp / "slurm-all"), "--executor", "slurm", "--slurm-tasks", "4"]
            code2, slurm_all = timed(argv)
            a, b = verdicts(newest(tmp / "local-all")), verdicts(newest(tmp / "slurm-all"))
            job = json.loads((newest(tmp / "slurm-all") / "run.json").read_text())["slurm"]["jobs"][0]
            tasks = slurm_times(c, job)
            print(f"\n2. the whole default matrix, static tier, {len(a)} cells, warm caches (exit {code}, {code2})")
            print(f"   local executor:       {local_all:.2f} s")
            print(
                f"   slurm, 4-task array:  {slurm_all:.2f} s; tasks start -> end: "
                + ", ".join(f"{t[1]:.0f} s" for t in tasks)
            )
            print(f"   ratio slurm/local {slurm_all / local_all:.2f} ({os.cpu_count()} CPUs: 2 tasks at a time here)")
            print(
                f"   records: {len(b)} in the slurm run, {len(a)} local; the same verdicts and fingerprints: {a == b}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

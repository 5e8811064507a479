"""Hostile input and faults: how long each takes to end, and what the store's checks cost on the hot path.

1. Time to exit for inputs that used to hang or crash, in fresh processes with the default options, beside the
   same process doing nothing but ``--version`` (the start-up every command pays), measured in this run:
   a silent index (accepts, never answers: the read timeout), a black-hole index (its accept queue full, so a
   connect never completes: the connect timeout), a FIFO as the matrix, deeply nested TOML, a valid 3,000-term
   ``-k``. Target (issue 10): a black-hole index ends with exit 4 within ~30 s.
2. The store's checks on its hot path: writing the cells of the default matrix's size (5,664) through
   ``Run.write_cell`` (id check, path check, atomic write) and reading them back through ``Run.results()`` (the
   non-blocking regular-file read, typed parsing), each against the bare operation on the same records (an
   atomic write; ``json.loads`` of the bytes) in the same run.

Run with ``nox -s bench -- hostile``.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.store.runs import start_run

CELLS = 5664
REPEATS = 3
PAIRS = 5


def seconds(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "stackmatrix", *argv], env=env, capture_output=True, check=False)
    return time.perf_counter() - t0, proc.returncode


@contextmanager
def silent_host(backlog_full: bool) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0 if backlog_full else 16)
    port = sock.getsockname()[1]
    fillers = []
    for _ in range(4 if backlog_full else 0):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.2)
    try:
        yield f"http://user:pw@127.0.0.1:{port}/simple"
    finally:
        for c in fillers:
            c.close()
        sock.close()


def exits(tmp: Path) -> None:
    env = {**os.environ, "STACKMATRIX_CACHE_DIR": str(tmp / "cache"), "STACKMATRIX_REPORTS_DIR": str(tmp / "r")}
    fifo = tmp / "fifo.toml"
    os.mkfifo(fifo)
    deep = tmp / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    base = statistics.median(seconds(["--version"], env)[0] for _ in range(REPEATS))
    cases: list[tuple[str, Callable[[], tuple[float, int]]]] = [
        ("FIFO as --matrix", lambda: seconds(["list", "--matrix", str(fifo)], env)),
        ("deeply nested TOML as --matrix", lambda: seconds(["list", "--matrix", str(deep)], env)),
        (
            "3,000-term -k (valid), then offline: no cache",
            lambda: seconds(["list", "--offline", "-k", " or ".join(["x"] * 3000)], env),
        ),
    ]
    for name, full in (("silent index (read timeout 20 s)", False), ("black-hole index (connect timeout 10 s)", True)):

        def run(full: bool = full) -> tuple[float, int]:
            with silent_host(full) as url:
                return seconds(["list", "--index-url", url], env)

        cases.append((name, run))
    print(f"start-up (--version), median of {REPEATS}: {base:.2f} s")
    print(f"{'case':<42}{'exit':>6}{'seconds':>10}{'minus start-up':>16}")
    for name, case in cases:
        took, code = case()
        print(f"{name:<42}{code:>6}{took:>10.2f}{took - base:>16.2f}")


def record(i: int) -> CellResult:
    passed = [
        Outcome(p, Status.PASS, None, f"{p} detail {i}", {"wheel": f"vllm-0.{i}.0.whl"}, 0.01)
        for p in ("resolve", "model-type", "arch")
    ]
    outcomes = (*passed, Outcome("fit", Status.FAIL, Reason.DOES_NOT_FIT, "too big", {"gib": 80.5}, 0.0))
    declared = {"kind": "vllm", "vllm": f"0.{i}.0", "transformers": "5.5.0", "model": "m", "target": "l4x1"}
    cell_id = f"vllm-0.{i}.0-tf5.5.0__gemma-4-e4b-it__l4x1"
    return CellResult(cell_id, Verdict.NO_FIT, Reason.DOES_NOT_FIT, None, outcomes, "f" * 20, declared)


def unchecked(data: dict[str, Any]) -> CellResult:
    """A cell record built as before the checks (no type check, no regular-file read): the baseline."""
    outcomes = tuple(
        Outcome(
            o["name"],
            Status(o["status"]),
            Reason(o["reason"]) if o.get("reason") else None,
            o.get("detail", ""),
            o.get("evidence", {}),
            o.get("duration_s", 0.0),
            o.get("override"),
        )
        for o in data["probes"]
    )
    reason = Reason(data["reason"]) if data.get("reason") else None
    verdict = Verdict(data["verdict"])
    return CellResult(
        data["cell"], verdict, reason, data.get("override"), outcomes, data["fingerprint"], data["declared"]
    )


def best_pair(bare: Callable[[], object], checked: Callable[[], object]) -> tuple[float, float]:
    """Best of ``PAIRS`` alternating runs of each: this machine's speed drifts, so neither gets the quiet minute."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(PAIRS):
        for fn, out in ((bare, times[0]), (checked, times[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return min(times[0]), min(times[1])


def store(tmp: Path) -> None:
    records = [record(i) for i in range(CELLS)]
    run = start_run(tmp / "store", matrix_hash="h", matrix_path="m", tier="static", selected=CELLS)
    bare_dir = tmp / "bare"

    def bare_write() -> None:
        for r in records:
            atomic_write_text(bare_dir / f"{r.cell_id}.json", json.dumps(r.to_json()))

    def checked_write() -> None:
        for r in records:
            run.write_cell(r)

    def bare_read() -> None:
        for path in sorted(bare_dir.glob("*.json")):
            unchecked(json.loads(path.read_bytes()))

    def checked_read() -> None:
        list(run.results())

    rows = [
        ("write 5,664 cells", *best_pair(bare_write, checked_write)),
        ("read them back", *best_pair(bare_read, checked_read)),
    ]
    print(f"\n{f'store hot path (best of {PAIRS} pairs)':<30}{'bare s':>10}{'checked s':>12}{'ratio':>8}")
    for name, bare, checked in rows:
        print(f"{name:<30}{bare:>10.3f}{checked:>12.3f}{checked / bare:>8.2f}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="stackmatrix-bench-") as tmp:
        exits(Path(tmp))
        store(Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared by the probe scripts (stdlib only): JSON lines on stdout, whatever happens.

A probe of one rung prints one line (``main``); a probe that climbs several rungs in one process prints one line
per rung as each ends, with its name (``rung``), so a probe killed on a timeout keeps the rungs it finished.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

PARENT = "STACKMATRIX_PROBE_PARENT"  # the pid of the process that started this one (the tool, or a probe)


def die_with_parent() -> None:
    """Linux: this process ends when the process that started it dies (SIGTERM from the kernel), so a tool killed
    with SIGKILL leaves nothing running behind it: a probe the tool started leads a process group of its own (its
    server, the engine's processes), and takes the whole group with it. Elsewhere: nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getpgrp() == os.getpid():
        signal.signal(signal.SIGTERM, _end_group)
    expected = os.environ.get(PARENT, "")
    if expected.isdigit() and os.getppid() != int(expected):  # it died before the request was made
        os._exit(1)
    os.environ[PARENT] = str(os.getpid())  # what this process starts checks against it


def _end_group(signum: int, frame: object) -> None:
    os.killpg(0, signal.SIGKILL)


die_with_parent()


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def outcome(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``'s result as a pass, or its failure (with a reason, or with the traceback the host classifies)."""
    t0 = time.perf_counter()
    try:
        result = fn()
        result.setdefault("status", "pass")
    except ProbeFailure as exc:
        result = {"status": "fail", "reason": exc.reason, "detail": str(exc), "evidence": exc.evidence}
    except BaseException as exc:  # the classification happens on the host, from the traceback
        result = {
            "status": "fail",
            "reason": None,
            "detail": f"{type(exc).__name__}: {exc}",
            "evidence": {"traceback": traceback.format_exc()[-4000:]},
        }
    # a rung that ran while another waited says how long it took itself (``duration_s`` in its result)
    if not isinstance(result.get("duration_s"), int | float):
        result["duration_s"] = round(time.perf_counter() - t0, 3)
    return result


def main(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Run ``fn(args)`` with the JSON argument in argv[1]; report pass, fail (with a reason) or error."""
    args = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    emit(outcome(lambda: fn(args)))


def rung(name: str, fn: Callable[[], dict[str, Any]]) -> bool:
    """One rung of a probe that climbs several: its line, named; whether it passed (a failure ends the climb)."""
    result = outcome(fn)
    result["rung"] = name
    emit(result)
    return bool(result["status"] == "pass")


class ProbeFailure(Exception):
    def __init__(self, reason: str, detail: str, **evidence: Any) -> None:
        super().__init__(detail)
        self.reason, self.evidence = reason, evidence

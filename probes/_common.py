"""Shared by the probe scripts (stdlib only): one JSON line on stdout, whatever happens."""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def main(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Run ``fn(args)`` with the JSON argument in argv[1]; report pass, fail (with a reason) or error."""
    args = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    t0 = time.perf_counter()
    try:
        result = fn(args)
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
    result["duration_s"] = round(time.perf_counter() - t0, 3)
    emit(result)


class ProbeFailure(Exception):
    def __init__(self, reason: str, detail: str, **evidence: Any) -> None:
        super().__init__(detail)
        self.reason, self.evidence = reason, evidence

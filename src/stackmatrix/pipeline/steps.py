"""Each command as one ordered table of steps (nox's ``workflow.execute``): a step is a plain function
``step(value, job) -> next value``, and an ``int`` ends it with that exit code::

    run      load -> expand -> select -> plan -> execute -> store -> render   (--resume: reopen first)
    check    load -> check_cell -> plan -> execute -> show_check
    worker   reopen_task -> task_cells -> run_task

(all at the end; answers/ has gate's, advise's, bisect's). ``execute`` closes the session and records a started
run's ending however the command ends.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from stackmatrix.domain import Cell, CellResult, Reason
from stackmatrix.errors import BadInput, GateRegression, InfraUnavailable, Interrupted, NothingSelected, Terminated
from stackmatrix.executors import Ended
from stackmatrix.matrix.loaded import Loaded
from stackmatrix.options import Settings
from stackmatrix.pipeline.plan import Plan
from stackmatrix.pipeline.session import Session
from stackmatrix.reports.formats import renderer
from stackmatrix.request import Request
from stackmatrix.store.runs import Run, record_ending

Step = Callable[[Any, "Job"], Any]
# Records a resumed run probes again: the cell's task (an executor's) ended before it was decided.
RESUBMITTED = frozenset({Reason.TASK_ENDED})


@dataclass
class Job:
    """What every step may read (the command's arguments, the settings) and what ``execute`` closes or records
    however the command ends (the session, the run)."""

    request: Request
    settings: Settings
    t0: float = field(default_factory=time.perf_counter)
    session: Session | None = None
    run: Run | None = None
    resume: Run | None = None
    collecting: bool = False  # the run resumed waits on what its executor submitted (``collect``)


@dataclass(frozen=True)
class Selected:
    loaded: Loaded
    cells: tuple[Cell, ...]  # this run's share
    selection: tuple[Cell, ...]  # the whole selection, every shard
    total: int = 0  # cells the matrix expanded to
    purpose: str = "matrix"
    meta: Mapping[str, Any] = field(default_factory=dict)  # extra run.json fields (a gate's policy, candidate)
    extra: Any = None  # what a command's own last step needs (the gate's cells and baseline)


@dataclass(frozen=True)
class Planned:
    selected: Selected
    plan: Plan


@dataclass(frozen=True)
class Executed:
    planned: Planned
    results: Mapping[str, CellResult]  # probed by this process
    copied: Mapping[str, tuple[str, bytes]]  # cache hits: cell id -> (the run it came from, the record)
    run: Run | None
    infra: bool  # the package index was unreachable somewhere
    code: int | None = None  # a later step's verdict on the run (the gate's); None: 0, or 4 with ``infra``
    lost: str = ""  # the executor lost cells (tasks that ended without recording them): what to say
    ending: Mapping[str, Any] = field(default_factory=dict)  # what that step adds to run.json
    extra: Any = None  # that step's result for the steps after it (the gate's findings)

    def result(self, cell_id: str) -> CellResult | None:
        """A cell's result, probed now or reused (parsed only when asked: a warm run reuses thousands)."""
        from stackmatrix.store.runs import parse_cell

        if cell_id in self.results:
            return self.results[cell_id]
        if cell_id in self.copied:
            return parse_cell(Path(self.copied[cell_id][0]), json.loads(self.copied[cell_id][1]), cell_id)
        return None


def execute(steps: Sequence[Step], request: Request) -> int:
    job = Job(request, request.settings())
    value: Any = None
    try:
        with _signals_raise():
            for step in steps:
                value = step(value, job)
                if isinstance(value, int) and not isinstance(value, bool):
                    break
            code = value if isinstance(value, int) else 0
            if job.run is not None and job.run.meta.get("status") == "running":
                job.run.finish("complete" if code == 0 else "failed", code)
            return code
    except BaseException as exc:
        if job.run is not None:  # also a run that finished and then failed a later step (its index, its tables)
            record_ending(job.run, exc)
        raise
    finally:
        if job.session is not None:
            job.session.close()
        if job.run is not None:
            job.run.stop_heartbeat()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated("terminated (SIGTERM)")


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM as an exception, like SIGINT's KeyboardInterrupt: the run records ``interrupted`` and exit 143."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (a test runner's worker): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- steps ----------------------------------------------------------------------------------------------------


def load(_: object, job: Job) -> Loaded:
    from stackmatrix.matrix.file import default_matrix_path
    from stackmatrix.matrix.loaded import load as load_matrix
    from stackmatrix.pipeline.session import open_session

    if job.request.baseline is not None:  # a gate against a stored run sees what that run saw
        from stackmatrix.store.runs import find_run

        adopt_as_of(find_run(job.settings.reports_dir, job.request.baseline), job)
    loaded = load_matrix(job.request.matrix or default_matrix_path(), as_of=job.settings.as_of)
    job.session = open_session(job.settings, loaded.spec.settings.platform)
    if job.settings.device == "gpu":  # a GPU host's driver, for the targets of its GPUs that declare none
        from dataclasses import replace

        from stackmatrix.gpus.inventory import host_driver, read_inventory

        loaded = replace(loaded, host=host_driver(read_inventory(), loaded.catalog.gpus))
    return loaded


def reopen(_: object, job: Job) -> Loaded:
    """``run --resume [RUN]``: the run to continue, its matrix, selection and options, as it recorded them."""
    from stackmatrix.pipeline.resume import resumable

    run = resumable(job.settings.reports_dir, job.request.resume)
    loaded = _reopened(run, job)
    job.resume = run
    return loaded


def reopen_collect(_: object, job: Job) -> Loaded:
    """``collect [RUN]``: a run submitted to an executor's tasks (``--detach``, or its submitter interrupted),
    reopened to wait for them."""
    from stackmatrix.pipeline.resume import collectable

    run = collectable(job.settings.reports_dir, job.request.run)
    loaded = _reopened(run, job)
    job.resume, job.collecting = run, True
    return loaded


def reopen_task(_: object, job: Job) -> Loaded:
    """``worker SUBMISSION --task N``: the run as its submitter recorded it, whatever its status (it is running)."""
    from stackmatrix.store.runs import open_run

    return _reopened(open_run(job.request.submission.parent.parent, named=True), job)


def _reopened(run: Run, job: Job) -> Loaded:
    """The run's matrix, selection and options, as it recorded them; a matrix, catalog or option that changed
    since is exit 2 (the cells probed now must be decided as the ones before were)."""
    from stackmatrix.matrix.loaded import load as load_matrix
    from stackmatrix.pipeline.session import open_session

    where = str(run.root / "run.json")
    job.request = job.request.replay(run.meta.get("args"), where)
    adopt_as_of(run, job)
    matrix = run.meta.get("matrix")
    if not isinstance(matrix, str) or not matrix.strip():
        raise BadInput(where, "matrix", matrix, "the path of the matrix file the run was started with")
    loaded = load_matrix(Path(matrix), as_of=job.settings.as_of)
    if loaded.matrix_hash != run.meta.get("matrix_hash"):
        raise BadInput(
            where,
            "matrix_hash",
            run.meta.get("matrix_hash"),
            f"{loaded.matrix_hash}: the matrix file or the catalogs changed since the run started; start a new run",
        )
    from stackmatrix.request import differing_options

    stored = run.meta.get("options")
    differ = differing_options(recorded_options(job, loaded), stored) if isinstance(stored, dict) else None
    if differ is not None:  # the cells probed now must be decided as the ones before were
        name, now, then = differ
        raise BadInput(where, f"options.{name}", then, f"{now!r}, the value this resume would probe with")
    job.session = open_session(job.settings, loaded.spec.settings.platform)
    return loaded


def adopt_as_of(run: Run, job: Job) -> None:
    """A run continued or compared with sees the world as ``run`` saw it: its recorded ``--as-of`` is taken when
    none is given; another one given is exit 2 (the cells would be decided in two views)."""
    from stackmatrix.asof import parse_as_of

    where = str(run.root / "run.json")
    options = run.meta.get("options")
    entry = options.get("as_of") if isinstance(options, dict) else None
    recorded = entry.get("value") if isinstance(entry, dict) else None
    if recorded is not None and not isinstance(recorded, str):
        raise BadInput(where, "options.as_of", recorded, "the as-of the run was made with (text) or null")
    now = job.settings.as_of
    if recorded is None:
        if now is not None and isinstance(entry, dict):  # (a run from before the option recorded none)
            raise BadInput(where, "options.as_of", None, f"--as-of {now}, the view given now (the run saw the newest)")
    elif now is None:
        adopted = parse_as_of(f"{where}: options.as_of", recorded)
        job.settings = job.settings.but("as_of", adopted, f"run {run.run_id}")
    elif str(now) != recorded:
        raise BadInput(where, "options.as_of", recorded, f"--as-of {now}, the view given now")


def expand(loaded: Loaded, job: Job) -> Selected:
    """The matrix's cells, the Triton releases read from their images first (what a cell probes)."""
    from stackmatrix.pipeline.shipped import matrix_releases, with_images

    _check_selection(job)
    return _expanded(with_images(session_of(job), loaded, matrix_releases(loaded)), job)


def expand_ids(loaded: Loaded, job: Job) -> Selected:
    """The matrix's cells for a listing: ids only, no registry read."""
    _check_selection(job)
    return _expanded(loaded, job)


def _check_selection(job: Job) -> None:
    from stackmatrix.matrix.select import select as select_cells

    select_cells([], keyword=job.request.keyword, shard=job.request.shard)  # bad -k / --shard: exit 2 before the index


def _expanded(loaded: Loaded, job: Job) -> Selected:
    from stackmatrix.pipeline.session import expand_matrix

    cells = expand_matrix(session_of(job), loaded).cells
    return Selected(loaded, tuple(cells), tuple(cells), len(cells))


def select(expanded: Selected, job: Job) -> Selected:
    from stackmatrix.matrix.select import select as select_cells

    request = job.request
    selection = select_cells(list(expanded.cells), keyword=request.keyword, only=request.only)
    cells = select_cells(selection, shard=request.shard)
    if not cells:
        raise NothingSelected(f"no cell of {expanded.total} matches the selection")
    return replace(expanded, cells=tuple(cells), selection=tuple(selection))


def _believed(run: Run) -> list[CellResult]:
    """A resumed run's records its run could have written: a record edited, repeated or never planned is no cell
    done (it is dropped and probed again), and said so."""
    from stackmatrix.store.provenance import doubt, planned_of

    results = list(run.results())
    planned = planned_of(run.plan())
    kept = []
    for r in results:
        if doubted := doubt(run, r, planned):
            print(f"stackmatrix: warning: {doubted[0]}: {doubted[1]}: probed again", file=sys.stderr)
        else:
            kept.append(r)
    return kept


def plan(selected: Selected, job: Job) -> Planned | int:
    from stackmatrix.pipeline.plan import make_plan, render_plan

    # a resumed run's records are all read and checked first: damage is exit 2 before anything is probed; a cell
    # whose task ended without it is not done: resuming submits it again
    again = RESUBMITTED if not job.collecting else frozenset()
    done = frozenset(r.cell_id for r in _believed(job.resume) if r.reason not in again) if job.resume else frozenset()
    the_plan = make_plan(selected, job, done)
    if job.resume is not None:
        from stackmatrix.pipeline.resume import check_same_cells

        check_same_cells(job.resume, the_plan)
    if job.request.plan:
        print(render_plan(the_plan), end="")
        return 0
    return Planned(selected, the_plan)


def execute_cells(planned: Planned, job: Job) -> Executed | int:
    """Record the run (new, or the resumed one), write the plan, copy the cache hits, probe the rest: each finished
    cell is appended to the journal as it comes. An answer (check) keeps its results in memory; its cells climbing
    on an executor elsewhere get a run kept for their tasks (``answer_run``)."""
    from stackmatrix.executors.static import declared, unreachable

    request, session, the_plan, selected = job.request, session_of(job), planned.plan, planned.selected
    run = _start(planned, job) if request.stores else None
    results: dict[str, CellResult] = {}
    if run is not None:
        shares = [p.cell.id for p in the_plan.planned]
        run.write_plan({c.id: declared(c) for c in selected.selection}, shares, request.shard, the_plan.to_json())
    copied, missed = _reuse(the_plan, job, run)

    def on_result(result: CellResult, slow: bool) -> None:
        results[result.cell_id] = result
        if run is not None and request.stores:
            run.write_cell(result, slow=slow)

    todo = [
        (p.cell, p.fingerprint, p.estimate_s) for p in the_plan.todo + [h for h in the_plan.hits if h.cell.id in missed]
    ]
    logs = run.root / "logs" if run else job.settings.cache_dir / "logs"
    collect = job.collecting
    ended: Ended | None = None
    try:
        if todo:  # the ladder's contexts (and the runner: a missing engine fails here) only where a cell climbs
            from stackmatrix.executors import Batch, executor, executor_of
            from stackmatrix.pipeline.contexts import contexts

            ctx, rctx = contexts(session, selected.loaded, request)
            # collect waits on what the run's own executor submitted
            name = executor_of(run.meta) if collect and run is not None else job.settings.executor
            if run is None and rctx is not None and executor(name).ELSEWHERE:
                run = answer_run(job, selected.loaded, selected.purpose, [c for c, _, _ in todo])
                logs = run.root / "logs"
            elif run is None:  # an answer's static tier is read here, in milliseconds
                name = "local"
            batch = Batch(todo, ctx, session, on_result, rctx, logs, request.quiet, run, request.detach, collect)
            ended = executor(name).run_batch(batch)
    except KeyboardInterrupt:
        kept = f"{run.count()} cells kept in {run.root}" if run else "nothing stored"
        raise Interrupted(f"interrupted: {kept}") from None
    probed = {k: v for k, v in results.items() if k not in copied}
    infra = unreachable(probed.values()) or session.index.unreachable is not None
    if ended is not None and ended.detached:
        assert run is not None
        run.finish("submitted", 0)
        return 0
    return Executed(planned, probed, copied, run, infra, lost=ended.message if ended and ended.lost else "")


def _reuse(the_plan: Plan, job: Job, run: Run | None) -> tuple[dict[str, tuple[str, bytes]], set[str]]:
    """The cache hits' records, appended to the run's journal unchanged. (cell id -> (the run it came from, the
    record), cells whose record could not be read: probed after all)."""
    from stackmatrix.store.index import open_index
    from stackmatrix.store.reuse import stored_records

    hits = {p.cell.id: (p.cached_from or "", p.fingerprint) for p in the_plan.hits}
    if not hits:
        return {}, set()
    reports = job.settings.reports_dir
    with open_index(reports, sync=False) as index:
        records, missed = stored_records(index, reports, hits)
    if run is not None:
        for cell_id, raw in records.items():
            run.copy_record(cell_id, raw)
    return {c: (hits[c][0], raw) for c, raw in records.items()}, set(missed)


def _start(planned: Planned, job: Job) -> Run:
    from stackmatrix.store.runs import start_run

    request, selected = job.request, planned.selected
    if job.resume is not None:
        run = job.resume
        if job.collecting:
            run.mark_running(collected=[*run.meta.get("collected", []), _now()])
        else:  # the records of cells submitted again go first: the journal holds one record per cell
            run.drop_records(set(run.cell_ids()) - planned.plan.done)
            resumes = [*run.meta.get("resumed", []), {"at": _now(), "done": len(planned.plan.done)}]
            run.mark_running(resumed=resumes)
        job.run = run
        return run
    run = start_run(
        job.settings.reports_dir,
        matrix_hash=selected.loaded.matrix_hash,
        matrix_path=str(selected.loaded.path),
        tier=request.tier,
        selected=len(selected.cells),
        shard=request.shard,
        purpose=selected.purpose,
        executor=job.settings.executor,
        args=request.replayed(),
        options=recorded_options(job, selected.loaded),
        **selected.meta,
    )
    job.run = run
    return run


ANSWERS = "answers"  # <reports>/answers/runs/<id>: where an answer's tasks write, out of the table's history


def answer_run(job: Job, loaded: Loaded, purpose: str, cells: Sequence[Cell]) -> Run:
    """Where an executor's tasks elsewhere write the cells of an answer that stores no run (check, advise,
    bisect): a run kept under ``<reports>/answers``, whose plan lists every cell sent so far (a task rebuilds
    its cells from their pins there)."""
    from stackmatrix.executors.static import declared
    from stackmatrix.store.runs import start_run

    run = job.run
    if run is None:
        run = start_run(
            job.settings.reports_dir / ANSWERS,
            matrix_hash=loaded.matrix_hash,
            matrix_path=str(loaded.path),
            tier="runtime",
            selected=0,
            shard=None,
            purpose=purpose,
            executor=job.settings.executor,
            args=job.request.replayed(),
            options=recorded_options(job, loaded),
        )
        job.run = run
    selection = {**((run.plan() or {}).get("selection") or {}), **{c.id: declared(c) for c in cells}}
    run.write_plan(selection, sorted(selection), None)
    run.meta["selected"] = len(selection)
    run.write_meta()
    return run


def probe_more(cells: Sequence[Cell], ctx: Any, rctx: Any, job: Job, loaded: Loaded, purpose: str) -> list[CellResult]:
    """An answer's later cells up the runtime tier (advise's best candidates, bisect's next release) through
    the executor the settings name: here, or as tasks elsewhere writing into the answer's kept run."""
    from stackmatrix.executors import Batch, executor

    chosen = executor(job.settings.executor)
    run = answer_run(job, loaded, purpose, cells) if chosen.ELSEWHERE else None
    logs = run.root / "logs" if run is not None else job.settings.cache_dir / "logs"
    got: list[CellResult] = []
    batch = Batch(
        [(c, "", 0.0) for c in cells], ctx, session_of(job), lambda r, _: got.append(r), rctx, logs, True, run
    )
    ended = chosen.run_batch(batch)
    if ended is not None and ended.lost:
        print(f"stackmatrix: warning: {ended.message}", file=sys.stderr)
    return got


def recorded_options(job: Job, loaded: Loaded) -> dict[str, Any]:
    """The resolved options and where each came from, secrets redacted (run.json's ``options``)."""
    from stackmatrix.request import option_sources

    return option_sources(job.settings, job.request, loaded.path, loaded.spec.settings)


def _now() -> str:
    from stackmatrix.store.runs import now

    return now()


def store(executed: Executed, job: Job) -> Executed:
    """The run's ending and its index rows (probed cells from memory, cache hits copied from their runs' rows)."""
    from stackmatrix.pipeline.session import young_only
    from stackmatrix.store.index import open_index

    run, session = executed.run, session_of(job)
    assert run is not None
    infra = executed.infra
    code = executed.code if executed.code is not None else InfraUnavailable.exit_code if infra else 0
    if executed.lost and executed.code is None:
        code = InfraUnavailable.exit_code
    from stackmatrix.reports.news import seen

    run.finish(
        "incomplete" if executed.lost else "index-unreachable" if infra else "complete",
        code,
        duration_s=round(time.perf_counter() - job.t0, 3),
        bytes_fetched=sum(session.http.bytes_by_label.values()),
        cells_probed=len(executed.results),
        cache_hits=len(executed.copied),
        upstream=seen(session.index, executed.planned.selected.loaded.catalog),
        **executed.ending,
    )
    session.close()  # the facts cache is part of the run too: a write that fails here is the run's ending
    with young_only(), open_index(job.settings.reports_dir, sync=False) as index:
        if job.resume is not None:
            index.ingest(run)
        else:
            index.ingest(run, executed.results.values(), copied=[(c, s) for c, (s, _) in executed.copied.items()])
    return executed


def render(executed: Executed, job: Job) -> int:
    """The readiness tables into ``<reports>/latest/`` (from the index's rows; the formats with evidence read the
    journal), the terminal table and the summary line."""
    from stackmatrix.pipeline.session import young_only
    from stackmatrix.reports.render import Report, write_reports
    from stackmatrix.reports.text import render_terminal, verdict_counts
    from stackmatrix.store.index import open_index
    from stackmatrix.store.runs import store_dir

    run = executed.run
    assert run is not None
    reports = job.settings.reports_dir
    with young_only():  # the cells, plan and records made before are no garbage
        with open_index(reports, sync=False) as index:
            rows = index.frame_rows(run.run_id)
            summaries = index.summaries(run.run_id)
        report = Report.of_rows(rows, run.meta, summaries=summaries)
        latest = store_dir(reports, "latest")
        files = write_reports(report, latest, load_full=lambda: Report.of(list(run.results()), run.meta))
    if job.request.table:
        print(render_terminal(report))
    counts = verdict_counts(report.columns["verdict"])
    done = executed.planned.plan.done
    print(
        f"{len(rows)} cells in {time.perf_counter() - job.t0:.1f}s ({len(executed.results)} probed, "
        f"{len(executed.copied)} cache hits"
        + (f", {len(done)} resumed" if done else "")
        + "): "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    print(summary_of(report.columns), end="")
    print(f"run: {run.root}\nreports: " + ", ".join(str(p) for p in files.values()))
    if executed.lost:
        print(executed.lost, file=sys.stderr)
        return InfraUnavailable.exit_code
    if executed.infra:
        why = why_unreachable(session_of(job), list(executed.results.values()))
        print(f"the package index was unreachable; cached facts were used where present ({why})", file=sys.stderr)
        return InfraUnavailable.exit_code
    return 0


def summary_of(columns: Mapping[str, Sequence[Any]], limit: int = 50) -> str:
    """The run's end beside the counts: every contradiction between the declared and the observed verdict, and
    every flaky cell (the grid itself is in readiness.txt, and ``--table`` prints it)."""
    lines = []
    cells = columns["cell"]
    contradicting = [n for n, c in enumerate(columns["contradiction"]) if c]
    if contradicting:
        lines.append(f"{len(contradicting)} observed verdicts contradict the declared ones:")
        for n in contradicting[:limit]:
            because = f" ({columns['reason'][n]})" if columns["reason"][n] else ""
            lines.append(f"  {cells[n]}: {columns['declared_verdict'][n]} -> {columns['observed_verdict'][n]}{because}")
    flaky = [n for n, f in enumerate(columns.get("flaky", ())) if f]
    if flaky:
        lines.append(f"{len(flaky)} flaky cells (the verdict changed between attempts):")
        lines += [f"  {cells[n]}: {columns['verdict'][n]}" for n in flaky[:limit]]
    hidden = max(0, len(contradicting) - limit) + max(0, len(flaky) - limit)
    if hidden:
        lines.append(f"  ... {hidden} more in the reports")
    return "".join(f"{line}\n" for line in lines)


def why_unreachable(session: Session, results: Sequence[CellResult]) -> str:
    """The index's own failure, else the first cell's (a file the listing names and the mirror does not serve)."""
    from stackmatrix.domain import Reason

    if session.index.unreachable:
        return session.index.unreachable
    first = next((o.detail for r in results for o in r.outcomes if o.reason is Reason.INDEX_UNREACHABLE), None)
    return first or "see index-unreachable cells"


def session_of(job: Job) -> Session:
    assert job.session is not None, "the load step opens the session"
    return job.session


def show_list(selected: Selected, job: Job) -> int:
    cells = selected.cells
    if job.request.json:
        rows = [
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
        ]
        print(json.dumps(rows, indent=1))
    else:
        print("\n".join(c.id for c in cells))
    return 0


def check_cell(loaded: Loaded, job: Job) -> Selected:
    """``check``'s one cell, from its flags (the kind's defaulting rules fill in what is not given)."""
    from stackmatrix.pipeline.shipped import spec_releases, with_images
    from stackmatrix.pipeline.stackspec import StackSpec, parse_target, resolve_stack

    request = job.request
    model = loaded.catalog.model(request.model)
    target = parse_target(request.gpu, loaded)
    spec = StackSpec(request.triton, request.vllm, request.transformers, request.kind)
    loaded = with_images(session_of(job), loaded, spec_releases(spec))
    cell = Cell(resolve_stack(spec, session_of(job), loaded, where="check"), model, target)
    return Selected(loaded, (cell,), (cell,), 1, purpose="check")


def show_check(executed: Executed, job: Job) -> int:
    (planned,) = executed.planned.plan.planned
    result = executed.result(planned.cell.id)
    assert result is not None
    source = executed.copied.get(result.cell_id, ("",))[0]  # the run a cache hit was stored by
    print(renderer("check", job.request.format)(result, source), end="")
    if executed.infra:
        why = why_unreachable(session_of(job), [result])
        print(f"the package index was unreachable; cached facts were used ({why})", file=sys.stderr)
        return InfraUnavailable.exit_code
    return 0


def stage_wheels(selected: Selected, job: Job) -> int:
    """The stage command's own step: the selected cells' stacks into the wheelhouse."""
    import httpx

    from stackmatrix.domain import Stack
    from stackmatrix.kinds import KINDS
    from stackmatrix.runners import DEFAULT_OVERRIDES, merge_overrides
    from stackmatrix.wheels.stage import Target, stage

    request, settings, cells = job.request, job.settings, selected.cells
    # Each stack's kind says the platform its wheels are for (vLLM's own: the --base-python image; Triton's: the
    # container's Python on Ubuntu 24.04), or that it installs nothing (a stock container ships its own).
    targets: dict[str, tuple[Stack, Target]] = {}
    for c in cells:
        target = KINDS[c.stack.kind].stage_target(c.stack, settings.base_python)
        if target is not None:
            targets[c.stack.id] = (c.stack, target)
    wheelhouse = request.wheelhouse or settings.cache_dir / "wheelhouse"
    overrides = merge_overrides(DEFAULT_OVERRIDES, request.override)
    total = 0
    for stack_id, (stack, target) in sorted(targets.items()):
        pins = KINDS[stack.kind].requirements(stack, settings.device)
        staged = stage(
            pins,
            wheelhouse,
            target,
            index_url=settings.index_url,
            cache_dir=settings.cache_dir,
            overrides=[*overrides, f"transformers=={stack.transformers}"],
            find_links=settings.torch_find_links,
            extra_index=None if settings.torch_find_links else settings.torch_index,
            cert=request.cert,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            as_of=settings.as_of,
        )
        total += staged.fetched_bytes
        print(f"{stack_id}: {len(staged.wheels)} wheels, {staged.fetched_bytes / 1e6:.1f} MB fetched -> {staged.pins}")
    skipped = len({c.stack.id for c in cells}) - len(targets)
    print(
        f"{len(targets)} stacks staged in {wheelhouse} ({total / 1e6:.1f} MB fetched); "
        f"{skipped} stock containers need nothing"
    )
    return 0


def build_images(selected: Selected, job: Job) -> int:
    """``image build``'s own step: the plan of the images the selected cells need under the docker runner, then
    each pulled or built (``--plan``: the plan alone), then ``--push``. Exit 1 when an image could not be made."""
    from stackmatrix.kinds import KINDS
    from stackmatrix.runners import DEFAULT_OVERRIDES, merge_overrides
    from stackmatrix.runners.docker import DockerRunner
    from stackmatrix.runners.prebuild import make, plan_lines, push, wanted

    request = job.request
    runner = DockerRunner.from_settings(job.settings, merge_overrides(DEFAULT_OVERRIDES, request.override))
    stacks = {c.stack.id: c.stack for c in selected.cells}
    wants = [w for _, s in sorted(stacks.items()) if (w := wanted(runner, s, KINDS[s.kind])) is not None]
    none = len(stacks) - len(wants)
    images = f"{len(wants)} image" + ("" if len(wants) == 1 else "s")
    print(f"image build: {images} for {len(selected.cells)} cells ({none} stacks need none)")
    print("\n".join(plan_lines(wants)), flush=True)
    if request.plan:
        return 0
    made = []
    for n, want in enumerate(wants, 1):
        done = make(runner, want, KINDS[want.stack.kind])
        made.append(done)
        what = f"failed: {done.failed}" if done.failed else f"{done.how} {done.ref}"
        print(f"[{n}/{len(wants)}] {done.stack}: {what} ({done.seconds:.1f} s)", flush=True)
    ok = [m for m in made if not m.failed]
    counts = {how: sum(1 for m in ok if m.how == how) for how in ("built", "reused", "pulled", "here")}
    summary = ", ".join(f"{n} {how}" for how, n in counts.items()) + f", {len(made) - len(ok)} failed"
    if not any(m.how in ("built", "pulled") for m in ok):
        summary += ": nothing to build or pull"
    if request.push:
        pushed = []
        for m in ok:
            pushed.append(push(runner.client, m.ref, request.push))
            print(f"push {m.ref} -> {request.push}: {pushed[-1]}", flush=True)
        summary += f"; {pushed.count('pushed')} pushed to {request.push}, {pushed.count('there')} there already"
    print(summary)
    return 0 if len(ok) == len(made) else GateRegression.exit_code


def task_cells(loaded: Loaded, job: Job) -> Selected:
    """The task's cells, rebuilt from the pins the run's plan lists for them (any run: the matrix's, a gate's,
    an answer's), each checked to make the id it was planned as."""
    from stackmatrix.executors.tasks import TASKS, read_submission
    from stackmatrix.pipeline.shipped import reads_backend_releases, with_images
    from stackmatrix.pipeline.stackspec import parse_target
    from stackmatrix.store.provenance import stack_of
    from stackmatrix.store.runs import open_run

    request = job.request
    layout = read_submission(request.submission)
    if not 0 <= request.task < len(layout.tasks):
        raise BadInput("--task", "task", request.task, f"a task of the submission (0 to {len(layout.tasks) - 1})")
    run = open_run(layout.root.parent.parent, named=True)
    where = str(run.root / "plan.json")
    selection = (run.plan() or {}).get("selection") or {}
    cells = []
    for cell_id, _, _ in layout.tasks[request.task].cells:
        pins = selection.get(cell_id)
        if not isinstance(pins, dict):
            raise BadInput(str(layout.root / TASKS), f"tasks[{request.task}].cells", cell_id, "a cell the run planned")
        stack = stack_of(pins) if all(isinstance(v, str | None) for v in pins.values()) else None
        if stack is None:
            raise BadInput(where, f"selection.{cell_id}", pins, "the cell's pins: a stack kind and versions as text")
        model = loaded.catalog.model(str(pins.get("model")), where=where)
        cell = Cell(stack, model, parse_target(str(pins.get("target")), loaded, where))
        if cell.id != cell_id:
            raise BadInput(where, f"selection.{cell_id}", pins, f"the pins of {cell_id} (they make {cell.id})")
        cells.append(cell)
    loaded = with_images(session_of(job), loaded, reads_backend_releases(c.stack for c in cells))
    return Selected(loaded, tuple(cells), tuple(cells), len(cells), extra=layout)


def run_task(selected: Selected, job: Job) -> int:
    """The worker's own step: its task's cells through the pipeline on this node, each record appended to the
    task's journal (the submitter folds it into the run's)."""
    from stackmatrix.executors.local import execute as run_cells
    from stackmatrix.executors.tasks import Layout
    from stackmatrix.pipeline.contexts import contexts
    from stackmatrix.store.journal import Journal

    request, session = job.request, session_of(job)
    layout: Layout = selected.extra  # read and checked by task_cells
    by_id = {c.id: c for c in selected.cells}
    todo = [(by_id[c], fp, estimate) for c, fp, estimate in layout.tasks[request.task].cells]
    journal = Journal(layout.part(request.task))

    def on_result(result: CellResult, slow: bool) -> None:
        journal.append(json.dumps(result.to_json()).encode(), slow=slow)

    try:
        ctx, rctx = contexts(session, selected.loaded, request, runtime=layout.runtime, fresh=layout.fresh)
        run_cells(todo, ctx, session, on_result, rctx, layout.root.parent.parent / "logs", quiet=True)
    finally:
        journal.close()
    return 0


# The compositions: every command that probes, its steps in order (gate.GATE, advise.ADVISE and bisect.BISECT
# compose these steps with their own).
RUN: tuple[Step, ...] = (load, expand, select, plan, execute_cells, store, render)
RESUME: tuple[Step, ...] = (reopen, *RUN[1:])
CHECK: tuple[Step, ...] = (load, check_cell, plan, execute_cells, show_check)
STAGE: tuple[Step, ...] = (load, expand, select, stage_wheels)
IMAGES: tuple[Step, ...] = (load, expand, select, build_images)
LIST: tuple[Step, ...] = (load, expand_ids, select, show_list)
LIST_PLAN: tuple[Step, ...] = (load, expand, select, plan)
COLLECT: tuple[Step, ...] = (reopen_collect, *RUN[1:])
WORKER: tuple[Step, ...] = (reopen_task, task_cells, run_task)

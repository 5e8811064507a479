"""The plan: decided before any probe, written first (``plan.json``), printed by ``run --plan``.

Per cell: its fingerprint, the one cache key, and whether a stored record already has it (a cache hit: copied,
not probed). The fingerprint covers everything a verdict depends on: the pins and wheels, the model, target and
Triton release records, the catalogs, settings, probe code version, tier and result options. For the runtime
tier: the builds the cells may need, each with the cells that share it; and an estimate from stored durations.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackmatrix import __version__
from stackmatrix.domain import Cell, Stack
from stackmatrix.errors import InfraUnavailable
from stackmatrix.ladder.facts import FACTS_VERSION
from stackmatrix.store.journal import check_readable
from stackmatrix.wheels.index import VersionNotFound

if TYPE_CHECKING:  # the workflow imports this module
    from stackmatrix.options import Settings
    from stackmatrix.pipeline.steps import Job, Selected
    from stackmatrix.request import Request

PROBE_CODE_VERSION = f"{__version__}/facts{FACTS_VERSION}/static2"  # static2: the kernel and driver rungs
# Without a stored duration: what a cell of each tier takes here (docs/benchmarks.md's measured figures).
DEFAULT_SECONDS = {"static": 0.0005, "runtime": 75.0}


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    fingerprint: str
    cached_from: str | None  # the run whose record has this fingerprint
    estimate_s: float


@dataclass(frozen=True)
class Build:
    """Something built once and used by several cells: an environment (a lock), an image, a tiny checkpoint."""

    what: str
    key: str
    cells: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    tier: str
    planned: tuple[PlannedCell, ...]  # this run's share, in the order it runs
    selection: tuple[Cell, ...]  # the whole selection (every shard), so a merge can name each missing cell
    builds: tuple[Build, ...]
    done: frozenset[str] = frozenset()  # resumed: cells the run's journal already holds
    climbing: int | None = None  # runtime tier: the cells to probe that the static tier leaves standing here

    @property
    def todo(self) -> list[PlannedCell]:
        return [p for p in self.planned if p.cell.id not in self.done and p.cached_from is None]

    @property
    def hits(self) -> list[PlannedCell]:
        return [p for p in self.planned if p.cell.id not in self.done and p.cached_from is not None]

    @property
    def estimate_s(self) -> float:
        """Seconds of work left, one slot's worth: the cells of one ladder share its climb (its longest counts)."""
        todo = {p.cell.id: p.estimate_s for p in self.todo}
        if self.climbing is None:
            return sum(todo.values())
        # the runtime tier: the cells that climb, by ladder (the others end at the static tier, in no time)
        ladders = [b for b in self.builds if b.what == "ladder"]
        return sum(max((todo[c] for c in b.cells if c in todo), default=0.0) for b in ladders)

    def to_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "cells": [p.cell.id for p in self.planned],
            "fingerprints": {p.cell.id: p.fingerprint for p in self.planned},
            "cached": {p.cell.id: p.cached_from for p in self.planned if p.cached_from},
            "done": sorted(self.done),
            "builds": [asdict(b) for b in self.builds],
            "estimate_s": round(self.estimate_s, 3),
            "climbing": self.climbing,
        }


@cache
def _record_json(record: object) -> str:
    return json.dumps(asdict(record), sort_keys=True, default=str)  # type: ignore[call-overload]


def fingerprint(cell: Cell, wheels: Sequence[str], context: str) -> str:
    """``wheels``: the cell's wheels by hash; ``context``: the catalogs, settings, tier and options (``key_of``).

    The sha256 of the JSON object {context, model, probes, python, stack, target, wheels} (keys sorted, json.dumps'
    spacing; model and target each their record's JSON text), written out part by part: ``Fingerprints`` encodes
    each stack's, model's and target's part once per run, not once per cell."""
    return Fingerprints(context)(cell, wheels)


class Fingerprints:
    """The fingerprints of one run's cells (one ``context``), each part encoded once."""

    def __init__(self, context: str) -> None:
        self.head = f'{{"context": {json.dumps(context)}, "model": '
        self.probes = f', "probes": {json.dumps(PROBE_CODE_VERSION)}, "python": '
        self._records: dict[int, tuple[object, str]] = {}  # id(record) -> (the record, kept alive; its part)

    def __call__(self, cell: Cell, wheels: Sequence[str]) -> str:
        return self.of(cell, self.stack_parts(cell, wheels))

    def stack_parts(self, cell: Cell, wheels: Sequence[str]) -> tuple[str, str]:
        """What the cells of one stack share: the python and stack part, and the wheels part."""
        stack = cell.stack
        return f'{json.dumps(stack.python)}, "stack": {json.dumps(stack.id)}', f"{json.dumps(list(wheels))}}}"

    def of(self, cell: Cell, stack_parts: tuple[str, str]) -> str:
        text = "".join(
            (
                self.head,
                self._record(cell.model),
                self.probes,
                stack_parts[0],
                ', "target": ',
                self._record(cell.target),
                ', "wheels": ',
                stack_parts[1],
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def _record(self, record: object) -> str:
        found = self._records.get(id(record))
        if found is None:
            found = self._records[id(record)] = (record, json.dumps(_record_json(record)))
        return found[1]


def context_key(catalog_hash: str, tier: str, options: Mapping[str, object]) -> str:
    """What every cell of one run shares in its fingerprint."""
    text = json.dumps({"catalogs": catalog_hash, "tier": tier, "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cell_wheels(cell: Cell, wheel_key: Any) -> list[str]:
    """The cell's vLLM and transformers wheels by hash; one the index does not give is named by its pin (its
    probe reports why)."""
    out = []
    for project, version in (("vllm", cell.stack.vllm), ("transformers", cell.stack.transformers)):
        if version:
            try:
                out.append(wheel_key(project, version, cell.stack.python))
            except (VersionNotFound, InfraUnavailable):
                out.append(f"{project}=={version}?")
    return out


def estimate(cell_id: str, tier: str, durations: Mapping[str, float], typical: float | None) -> float:
    if cell_id in durations:
        return durations[cell_id]
    return typical if typical is not None else DEFAULT_SECONDS.get(tier, 1.0)


def typical(durations: Mapping[str, float]) -> float | None:
    return statistics.median(durations.values()) if durations else None


def builds_of(cells: Sequence[Cell], keys: Mapping[str, Any]) -> tuple[Build, ...]:
    """Group cells by each build key function in ``keys`` (what -> cell -> key or None): the builds, each listed
    before the cells that use it, biggest sharing first."""
    out = []
    for what, key_fn in keys.items():
        groups: dict[str, list[str]] = {}
        for c in cells:
            key = key_fn(c)
            if key is not None:
                groups.setdefault(str(key), []).append(c.id)
        out += [Build(what, k, tuple(v)) for k, v in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    return tuple(out)


def render_plan(plan: Plan, *, limit: int = 20) -> str:
    """``run --plan``: what would run, what is reused, what is built, how long it should take."""
    todo, hits = plan.todo, plan.hits
    lines = [
        f"plan: {len(plan.planned)} cells ({plan.tier} tier): {len(todo)} to probe, {len(hits)} cache hits"
        + (f", {len(plan.done)} already done (resumed)" if plan.done else ""),
        f"estimate: {_duration(plan.estimate_s)} of work from stored durations",
    ]
    if plan.climbing is not None:
        lines.insert(1, f"runtime tier: {plan.climbing} of them left standing by the static tier, climbable here")
    by_what: dict[str, list[Build]] = {}
    for b in plan.builds:
        by_what.setdefault(b.what, []).append(b)
    for what, builds in by_what.items():
        shared = sum(len(b.cells) for b in builds)
        lines.append(f"{what}s: {len(builds)} for {shared} cells")
        lines += [f"  {b.key}  <- {len(b.cells)} cell{'s' * (len(b.cells) != 1)}" for b in builds[:limit]]
        if len(builds) > limit:
            lines.append(f"  ... {len(builds) - limit} more")
    for p in todo[:limit]:
        lines.append(f"  probe {p.cell.id}  ~{_duration(p.estimate_s)}  [{p.fingerprint}]")
    if len(todo) > limit:
        lines.append(f"  ... {len(todo) - limit} more to probe")
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def result_options(settings: Settings, request: Request) -> dict[str, object]:
    """The options whose value changes a verdict (options.affects_results): part of every fingerprint. The others
    (jobs, timeouts, the cache and reports directories) change how fast, not what."""
    from stackmatrix.options import OPTIONS
    from stackmatrix.request import FLAGS, affects_results

    out = {k: getattr(settings, k, None) for k in OPTIONS if affects_results(k)}
    out.update({k: request.value_of(k) for k in FLAGS if affects_results(k)})
    if isinstance(user := out.get("vllm_backend"), Path):  # its content, not its path: an edited backend is new
        from stackmatrix.triton.backend import from_path

        out["vllm_backend"] = from_path(user).sha256
    return out


def make_plan(selected: Selected, job: Job, done: frozenset[str]) -> Plan:
    """Fingerprints, cache hits and stored durations for ``selected``; the builds its runtime cells may need."""
    from stackmatrix.store.index import open_index

    request, settings, session = job.request, job.settings, job.session
    assert session is not None, "the load step opens the session"
    check_readable(len(selected.cells))  # before anything is probed
    tier = request.tier
    loaded = selected.loaded
    ctx = context_key(
        loaded.catalog_hash, tier, {**result_options(settings, request), "settings": loaded.spec.settings}
    )

    @cache
    def wheel_key(project: str, version: str, python: str) -> str:
        return str(session.facts.wheel(project, version, python).key)

    fingerprints = Fingerprints(ctx)
    stacks: dict[Stack, tuple[str, str]] = {}  # the cells of one stack share its wheels
    fps: dict[str, str] = {}
    for c in selected.cells:
        parts = stacks.get(c.stack)
        if parts is None:
            parts = stacks[c.stack] = fingerprints.stack_parts(c, cell_wheels(c, wheel_key))
        fps[c.id] = fingerprints.of(c, parts)
    hits: dict[str, tuple[str, str]] = {}
    durations: dict[str, float] = {}
    if (settings.reports_dir / "runs").is_dir():  # no stored run: nothing to reuse, and nothing is created yet
        with open_index(settings.reports_dir) as index:
            hits = {} if request.fresh else index.hits(fps.values())
            if any(fps[c.id] not in hits for c in selected.cells if c.id not in done):  # else: nothing to estimate
                durations = index.durations(tier)
    usual = typical(durations)
    planned = tuple(
        PlannedCell(
            c, fps[c.id], hits[fps[c.id]][0] if fps[c.id] in hits else None, estimate(c.id, tier, durations, usual)
        )
        for c in selected.cells
    )
    builds: tuple[Build, ...] = ()
    climbing = None
    if tier == "runtime":  # the builds of the cells that will climb: the static tier decides which, in seconds
        from stackmatrix.executors.ladders import climbers

        todo = [p.cell for p in planned if p.cell.id not in done and p.cached_from is None]
        climbing = len(cells := climbers(todo, session, loaded, request.resolve))
        builds = runtime_builds(cells, settings, request)
    return Plan(tier, planned, tuple(selected.selection), builds, done, climbing)


def runtime_builds(cells: Sequence[Cell], settings: Settings, request: Request) -> tuple[Build, ...]:
    """The ladders (one engine start for the cells of one stack and checkpoint), the tritonservers (one per ladder of
    a stack that runs in Triton), the environments (one lock per stack's requirements), the images (docker runner)
    and the tiny checkpoints (architecture features x transformers) the runtime tier may build, each with the
    cells that share it."""
    from stackmatrix.kinds import KINDS
    from stackmatrix.ladder.runtime import spec_label, tiny_spec
    from stackmatrix.runners import RUNNERS
    from stackmatrix.runners.images import ImagePlan, TritonImages

    containers = RUNNERS[settings.runner].load().containers
    images = TritonImages(settings.triton_image)

    def image_plan(c: Cell) -> ImagePlan | None:
        return KINDS[c.stack.kind].image(c.stack, images) if containers else None

    def env(c: Cell) -> str | None:
        plan = image_plan(c)
        return (
            None
            if plan is not None and plan.as_is
            else " ".join(KINDS[c.stack.kind].requirements(c.stack, settings.device))
        )

    def checkpoint(c: Cell) -> str:
        return spec_label(tiny_spec(c.model, not request.full_class))

    def tiny(c: Cell) -> str:
        return f"{checkpoint(c)} transformers=={c.stack.transformers}"

    server = "in the release's image" if containers else "pytriton's 2.51.0, a stand-in on this CPU"

    def tritonserver(c: Cell) -> str | None:  # one per ladder of a stack that runs in Triton
        return f"{c.stack.id} {checkpoint(c)} ({server})" if c.stack.in_triton else None

    keys: dict[str, Any] = {
        "ladder": lambda c: f"{c.stack.id} {checkpoint(c)}",
        "tritonserver": tritonserver,
        "environment": env,
        "tiny checkpoint": tiny,
    }
    if containers:  # an image per stack, built on its environment; a stock Triton container as shipped

        def image(c: Cell) -> str | None:
            plan = image_plan(c)
            if plan is None:
                return None
            if plan.as_is:
                return f"{plan.base} (as shipped: pulled if absent, nothing built)"
            return f"{c.stack.id} (built on {plan.base or settings.base_image})"

        keys["image"] = image
    return builds_of(cells, keys)

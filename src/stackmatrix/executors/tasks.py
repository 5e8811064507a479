"""What a run submitted to an array executor keeps under ``<run>/<executor>/<k>/`` (the k-th submission:
``--resume`` makes a new one): ``tasks.json`` (each task's cells and what it asks for, each array's job id), one
batch script per array, and per task its worker's records (``task-<n>.jsonl``, a journal the submitter folds into
the run's) and its output. Any array backend (Slurm's today) plans, writes and reads its submissions here.

The files are read back as input like any other (a worker on another node, ``collect`` days later): damage is
exit 2 naming the file and the key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stackmatrix.errors import BadInput
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.files.readfile import read_json
from stackmatrix.ids import is_cell_id

TASKS = "tasks.json"

TaskCell = tuple[str, str, float]  # (cell id, fingerprint, estimate in seconds)


@dataclass(frozen=True)
class TaskSpec:
    """One array task: its cells and what it asks of a node."""

    cells: tuple[TaskCell, ...]
    gpus: int = 0
    cpus: int = 1
    mem_mb: int = 1024
    seconds: float = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.gpus, self.cpus, self.mem_mb


@dataclass(frozen=True)
class ArrayRecord:
    """One submitted job array: tasks ``offset .. offset+count-1`` of tasks.json, as the array's 0..count-1."""

    offset: int
    count: int
    job: str = ""  # the backend's job id, once submitted

    def task(self, n: int) -> str:
        """The backend's name for the run's task ``n``: ``<job>_<index>``."""
        return f"{self.job}_{n - self.offset}"


@dataclass(frozen=True)
class Layout:
    root: Path  # <run>/<executor>/<k>
    tasks: tuple[TaskSpec, ...]
    arrays: tuple[ArrayRecord, ...]
    fresh: bool = False  # run --fresh: the workers' ladders reuse no stored observation either
    runtime: bool | None = None  # the cells climb the runtime tier (None, a layout from before: as the run's tier)

    def array_of(self, n: int) -> ArrayRecord:
        return next(a for a in self.arrays if a.offset <= n < a.offset + a.count)

    def part(self, n: int) -> Path:
        return self.root / f"task-{n}.jsonl"

    def log(self, n: int) -> Path:
        array = self.array_of(n)
        return self.root / f"array-{self.arrays.index(array)}-{n - array.offset}.log"

    def script(self, i: int) -> Path:
        return self.root / f"array-{i}.sh"

    def write(self) -> None:
        data = {
            "tasks": [{**asdict(t), "cells": [list(c) for c in t.cells]} for t in self.tasks],
            "arrays": [asdict(a) for a in self.arrays],
            "fresh": self.fresh,
            "runtime": self.runtime,
        }
        atomic_write_text(self.root / TASKS, json.dumps(data, separators=(",", ":")))

    def with_job(self, i: int, job: str) -> Layout:
        arrays = list(self.arrays)
        arrays[i] = ArrayRecord(arrays[i].offset, arrays[i].count, job)
        return Layout(self.root, self.tasks, tuple(arrays), self.fresh, self.runtime)


def plan_layout(
    run_root: Path, under: str, tasks: Sequence[TaskSpec], fresh: bool = False, runtime: bool | None = None
) -> Layout:
    """The tasks ordered by shape, one array per shape (an array asks the same of every task); ``under``: the
    executor's folder in the run."""
    ordered = sorted(tasks, key=lambda t: t.shape)
    arrays: list[ArrayRecord] = []
    for n, t in enumerate(ordered):
        if n == 0 or t.shape != ordered[n - 1].shape:
            arrays.append(ArrayRecord(n, 0))
        arrays[-1] = ArrayRecord(arrays[-1].offset, arrays[-1].count + 1)
    base = run_root / under
    base.mkdir(exist_ok=True)
    root = base / str(len(submissions(run_root, under)) + 1)
    root.mkdir()
    return Layout(root, tuple(ordered), tuple(arrays), fresh, runtime)


def submissions(run_root: Path, under: str) -> list[Path]:
    """The run's submissions, oldest first (``--resume`` submits what is missing as a new one)."""
    base = run_root / under
    if not base.is_dir() or base.is_symlink():
        return []
    return sorted((p for p in base.iterdir() if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))


def read_layout(run_root: Path, under: str) -> Layout:
    """The run's latest submission."""
    found = submissions(run_root, under)
    if not found:
        raise BadInput(str(run_root / under), "<path>", "missing", "the run's submission (was it submitted?)")
    return read_submission(found[-1])


def read_submission(root: Path) -> Layout:
    """A submission's ``tasks.json``, checked key by key."""
    path = root / TASKS
    data = read_json(path, "the run's submitted tasks (tasks.json)")
    where = str(path)
    tasks_raw = data.get("tasks") if isinstance(data, dict) else None
    arrays_raw = data.get("arrays") if isinstance(data, dict) else None
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise BadInput(where, "tasks", tasks_raw, "a list of tasks")
    if not isinstance(arrays_raw, list) or not arrays_raw:
        raise BadInput(where, "arrays", arrays_raw, "a list of job arrays")
    tasks = tuple(_task(where, n, t) for n, t in enumerate(tasks_raw))
    arrays = tuple(_array(where, n, a) for n, a in enumerate(arrays_raw))
    covered = sorted(n for a in arrays for n in range(a.offset, a.offset + a.count))
    if covered != list(range(len(tasks))):
        raise BadInput(where, "arrays", f"{len(arrays)} arrays", f"arrays that cover tasks 0..{len(tasks) - 1} once")
    fresh = data.get("fresh", False)
    if not isinstance(fresh, bool):
        raise BadInput(where, "fresh", fresh, "true or false")
    runtime = data.get("runtime")
    if runtime is not None and not isinstance(runtime, bool):
        raise BadInput(where, "runtime", runtime, "true, false or null")
    return Layout(root, tasks, arrays, fresh, runtime)


def _int(where: str, key: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise BadInput(where, key, value, f"an integer ≥ {low}")
    return value


def _task(where: str, n: int, raw: Any) -> TaskSpec:
    if not isinstance(raw, dict):
        raise BadInput(where, f"tasks[{n}]", type(raw).__name__, "an object")
    cells = raw.get("cells")
    ok = isinstance(cells, list) and all(
        isinstance(c, list)
        and len(c) == 3
        and is_cell_id(c[0])
        and isinstance(c[1], str)
        and isinstance(c[2], int | float)
        and not isinstance(c[2], bool)
        and math.isfinite(c[2])
        for c in cells
    )
    if not ok or not cells:
        raise BadInput(where, f"tasks[{n}].cells", "…", "a list of [cell id, fingerprint, estimate]")
    seconds = raw.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds):
        raise BadInput(where, f"tasks[{n}].seconds", seconds, "a number")
    return TaskSpec(
        tuple((str(c[0]), str(c[1]), float(c[2])) for c in cells),
        _int(where, f"tasks[{n}].gpus", raw.get("gpus"), 0),
        _int(where, f"tasks[{n}].cpus", raw.get("cpus"), 1),
        _int(where, f"tasks[{n}].mem_mb", raw.get("mem_mb"), 1),
        float(seconds),
    )


def _array(where: str, n: int, raw: Any) -> ArrayRecord:
    if not isinstance(raw, dict):
        raise BadInput(where, f"arrays[{n}]", type(raw).__name__, "an object")
    job = raw.get("job")
    if not isinstance(job, str) or (job and not job.isdigit()):
        raise BadInput(where, f"arrays[{n}].job", job, "a job id (digits), or empty before submission")
    return ArrayRecord(
        _int(where, f"arrays[{n}].offset", raw.get("offset"), 0),
        _int(where, f"arrays[{n}].count", raw.get("count"), 1),
        job,
    )

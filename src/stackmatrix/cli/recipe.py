"""``recipe CELL``: the files that run a stored cell that serves (answers/recipe.py), written to a directory."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stackmatrix.answers.recipe import Locker, make, option
from stackmatrix.asof import AsOf, parse_as_of
from stackmatrix.errors import BadInput, InfraUnavailable, path_faults
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.request import Request
from stackmatrix.store.runs import store_dir


def cmd_recipe(request: Request) -> int:
    from stackmatrix.cli.stored import _stored_run

    run = _stored_run(request, request.from_run)
    found = next((r for r in run.results() if r.cell_id == request.cell), None)
    if found is None:
        raise BadInput("recipe", "cell", request.cell, f"a cell of run {run.run_id} (list --only prints them)")
    recipe = make(found, run.meta, locker(request, run.meta))
    out = request.out or store_dir(request.settings().reports_dir, "recipes", found.cell_id)
    with path_faults("--out" if request.out else None):
        for name, text in sorted(recipe.files.items()):
            path = out / name
            atomic_write_text(path, text)
            if name in recipe.executable:
                os.chmod(path, 0o755)
    print(f"recipe for {found.cell_id} ({found.verdict}, run {run.run_id}): {out}")
    for name in sorted(recipe.files):
        print(f"  {name}")
    return 0


def as_of_of(meta: Mapping[str, Any]) -> AsOf | None:
    """The run's view of the index: its --as-of, else the moment it started (what it could see)."""
    given = option(meta, "as_of") or meta.get("started")
    return parse_as_of("run.json", str(given)) if given else None


def locker(request: Request, meta: Mapping[str, Any]) -> Locker:
    from stackmatrix.runners import EnvBuildFailed
    from stackmatrix.runners.venv import VenvOptions, VenvRunner

    settings, as_of = request.settings(), as_of_of(meta)
    find_links = option(meta, "torch_find_links")

    def lock(requirements: Sequence[str], overrides: Sequence[str], python: str, exact: bool) -> tuple[str, list[str]]:
        options = VenvOptions(
            cache_dir=settings.cache_dir,
            index_url=settings.index_url,
            python=python,
            # an environment of the runtime tier: its CPU torch came from these; a GPU stack's torch is the index's
            torch_find_links=Path(find_links) if exact and find_links else None,
            torch_index=settings.torch_index if exact else None,
            overrides=(),
            as_of=as_of,
        )
        try:
            runner = VenvRunner(options)
            return runner.hashed(requirements, overrides, exact), runner.sources()
        except EnvBuildFailed as exc:
            if exc.reason == "index-unreachable":
                raise InfraUnavailable(f"recipe: the index did not answer: {exc}") from None
            expected = f"a cell whose pins uv resolves with hashes ({(exc.tail or str(exc)).splitlines()[-1]})"
            raise BadInput("recipe", "cell", request.cell, expected) from None

    return lock

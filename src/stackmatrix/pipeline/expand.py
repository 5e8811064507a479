"""Matrix file -> cells. Each stack rule goes through its kind's module (kinds/); version rules resolve against
the index (through :class:`IndexView`)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from stackmatrix.domain import Cell, HostDriver, Stack, TritonRelease
from stackmatrix.ids import check_id_part
from stackmatrix.kinds import KINDS
from stackmatrix.matrix.catalog import Catalog
from stackmatrix.matrix.file import MatrixFile, Range, StackRule, target_of
from stackmatrix.matrix.pins import IndexView, transformers_for

__all__ = ["Expansion", "IndexView", "expand", "expand_stacks", "transformers_for"]


@dataclass(frozen=True)
class Expansion:
    cells: tuple[Cell, ...]
    excluded: tuple[tuple[str, str], ...]  # (cell id, reason)


def releases_of(rule: StackRule, catalog: Catalog) -> list[TritonRelease]:
    """The rule's Triton releases: a list, or every catalog release from ``from`` to ``to`` (none: no Triton)."""
    if isinstance(rule.triton, Range):
        names = list(catalog.triton)
        lo, hi = rule.triton.from_, rule.triton.to or "99.99"
        return [catalog.triton[r] for r in names if lo <= r <= hi]
    return [catalog.triton[r] for r in rule.triton or [] if r in catalog.triton]  # not out by the as-of: left out


def expand_stacks(spec: MatrixFile, catalog: Catalog, index: IndexView, where: str) -> list[Stack]:
    """Each rule through its kind's module (the rules ``check``'s flags use too), the first of each id kept."""
    stacks: dict[str, Stack] = {}
    for i, rule in enumerate(spec.stack):
        kind = KINDS[rule.kind]
        kind.check_rule(rule, where, f"stack[{i}]")
        for s in kind.expand(rule, releases_of(rule, catalog), index, spec.settings.python, where, f"stack[{i}]"):
            stacks.setdefault(s.id, s)
    return list(stacks.values())


def expand(
    spec: MatrixFile, catalog: Catalog, index: IndexView, where: str, host: HostDriver | None = None
) -> Expansion:
    stacks = expand_stacks(spec, catalog, index, where)
    for stack in stacks:  # made of checked versions and releases; its length is checked here
        check_id_part(stack.id, where, "stack")
    models = catalog.models_matching(spec.models.include)
    targets = [target_of(name, t, catalog, where, host) for name, t in spec.targets.items()]
    cells: list[Cell] = []
    excluded: list[tuple[str, str]] = []
    for stack in stacks:
        for model in models:
            for target in targets:
                cell = Cell(stack, model, target)
                hit = next((e for e in spec.exclude if fnmatch.fnmatchcase(cell.id, e.cells)), None)
                if hit:
                    excluded.append((cell.id, hit.reason))
                else:
                    cells.append(cell)
    cells.sort(key=lambda c: c.id)
    return Expansion(tuple(cells), tuple(excluded))

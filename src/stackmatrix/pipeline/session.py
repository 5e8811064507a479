"""A probing session: the settings, the index and wheel readers, the facts read from wheels and the registry
reader, opened once per command; and the expansion of a matrix through it."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stackmatrix.errors import InfraUnavailable
from stackmatrix.executors.static import parallel
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.files.readfile import cached_bytes
from stackmatrix.ladder.facts import FACTS_VERSION, Facts
from stackmatrix.options import Settings
from stackmatrix.pipeline.expand import Expansion, expand
from stackmatrix.wheels.http import Http
from stackmatrix.wheels.index import Index, VersionNotFound
from stackmatrix.wheels.reader import WheelReader

if TYPE_CHECKING:
    from stackmatrix.matrix.loaded import Loaded
    from stackmatrix.registry.image import ImageReader


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

    parallel(session, one, session.facts.versions(project))
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
        return expand(loaded.spec, loaded.catalog, session.facts, str(loaded.path), loaded.host)


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

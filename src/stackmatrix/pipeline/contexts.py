"""What the ladder is given: the static tier's context and the runtime tier's runner, built from the settings
by the runner the settings name (runners.RUNNERS)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from stackmatrix.ladder.backend_image import BackendFromImage
from stackmatrix.ladder.runtime import RuntimeContext
from stackmatrix.ladder.static import Context
from stackmatrix.matrix.loaded import Loaded
from stackmatrix.pipeline.session import Session
from stackmatrix.runners import DEFAULT_OVERRIDES, RUNNERS, merge_overrides
from stackmatrix.triton.backend import BackendFinder, BackendOptions

if TYPE_CHECKING:
    from stackmatrix.matrix.catalog import Catalog
    from stackmatrix.request import Request


def static_context(session: Session, loaded: Loaded, resolve: str = "declared") -> Context:
    """The static tier's context; a runner that runs containers gives ``backend-imports`` more to read than the
    catalog: the Triton image, when it is here."""
    st = session.settings
    hook = BackendFromImage.from_settings(st) if RUNNERS[st.runner].load().containers else None
    return Context(loaded.catalog, session.facts, loaded.spec.settings, resolve, st, backend_image=hook)


def runtime_context(
    session: Session,
    overrides: Sequence[str] = (),
    full_class: bool = False,
    fresh: bool = False,
    catalog: Catalog | None = None,
) -> RuntimeContext:
    """The runtime tier's runner and options. ``overrides`` replace the default ones for the same packages
    (e.g. ``torch==2.13.0`` and ``torchvision==0.28.0``: PyPI's build of the pinned torch, so the multimodal
    class can import the torchvision made for it). ``fresh``: the ladder's stored observations are not reused
    either (``--fresh`` probes every cell). ``catalog``: its Triton releases (with what their images showed) give
    a triton-vllm ladder its release and its vLLM backend."""
    st = session.settings
    runner = RUNNERS[st.runner].load().from_settings(st, merge_overrides(DEFAULT_OVERRIDES, overrides))
    url = None if st.offline else st.vllm_backend_url
    options = BackendOptions(url, st.vllm_backend, st.connect_timeout, st.read_timeout)
    return RuntimeContext(
        runner,
        st.cache_dir,
        text_class=not full_class,
        weights_dir=st.weights_dir,
        reuse_results=not fresh,
        releases=dict(catalog.triton) if catalog is not None else {},
        backends=BackendFinder(options, st.cache_dir),
        index_url=st.index_url,
    )


def contexts(
    session: Session, loaded: Loaded, request: Request, *, runtime: bool | None = None, fresh: bool | None = None
) -> tuple[Context, RuntimeContext | None]:
    """The one place a command's arguments become the ladder's contexts: the static tier's always, the runtime
    tier's where it climbs (``runtime``: the command's ``--tier`` unless told; ``fresh``: its ``--fresh`` unless
    told, e.g. an executor task's submission)."""
    ctx = static_context(session, loaded, request.resolve)
    if not (request.tier == "runtime" if runtime is None else runtime):
        return ctx, None
    again = request.fresh if fresh is None else fresh
    return ctx, runtime_context(session, request.override, request.full_class, again, loaded.catalog)

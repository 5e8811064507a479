"""What the ladder is given: the static tier's context and the runtime tier's runner, built from the settings."""

from __future__ import annotations

from collections.abc import Sequence

from stackmatrix.ladder.runtime import RuntimeContext
from stackmatrix.ladder.static import Context
from stackmatrix.pipeline import Loaded, Session
from stackmatrix.runners import Runner
from stackmatrix.runners.venv import DEFAULT_OVERRIDES, VenvOptions, VenvRunner, merge_overrides


def static_context(session: Session, loaded: Loaded, resolve: str = "declared") -> Context:
    """The static tier's context; with the docker runner, ``backend-imports`` reads the Triton image when it is here."""
    st = session.settings
    hook = None
    if st.runner == "docker":
        from stackmatrix.images import TritonImages
        from stackmatrix.ladder.backend_image import BackendFromImage
        from stackmatrix.runners.docker import client

        hook = BackendFromImage(TritonImages(st.triton_image), client(), st.cache_dir / "logs")
    return Context(loaded.catalog, session.facts, loaded.spec.settings, resolve, st, backend_image=hook)


def runtime_context(session: Session, overrides: Sequence[str] = (), full_class: bool = False) -> RuntimeContext:
    """The runtime tier's runner and options. ``overrides`` replace the default ones for the same packages
    (e.g. ``torch==2.13.0`` and ``torchvision==0.28.0``: PyPI's build of the pinned torch, so the multimodal
    class can import the torchvision made for it)."""
    st = session.settings
    merged = merge_overrides(DEFAULT_OVERRIDES, overrides)
    runner: Runner
    if st.runner == "docker":
        from stackmatrix.images import TritonImages
        from stackmatrix.runners.docker import DockerOptions, DockerRunner

        runner = DockerRunner(
            DockerOptions(
                cache_dir=st.cache_dir,
                index_url=st.index_url,
                base=st.base_image,
                python=st.base_python,
                device=st.device,
                torch_find_links=st.torch_find_links,
                torch_index=st.torch_index,
                overrides=merged,
                triton_images=TritonImages(st.triton_image),
            )
        )
    else:
        runner = VenvRunner(
            VenvOptions(
                cache_dir=st.cache_dir,
                index_url=st.index_url,
                torch_find_links=st.torch_find_links,
                torch_index=st.torch_index,
                device=st.device,
                overrides=merged,
            )
        )
    return RuntimeContext(runner, st.cache_dir, text_class=not full_class, weights_dir=st.weights_dir)

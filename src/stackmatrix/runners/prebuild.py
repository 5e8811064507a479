"""``image build``: the container images a docker-runner run of the selected cells needs, made before it (a GPU lab's
nightly then only runs them): a plan first (which images, which are here already), then each made the way the run
makes it (``DockerRunner.prepare``: a stock container pulled, a derived image built from ``images/<kind>`` on its
release's image, reused by content tag), then optionally pushed to a registry with Docker's own credentials
(``~/.docker/config.json``, its credential helpers), skipping what the registry already holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import docker.errors

from stackmatrix.domain import Stack
from stackmatrix.errors import InfraUnavailable
from stackmatrix.redact import redact
from stackmatrix.registry.reference import parse_ref
from stackmatrix.runners import EnvBuildFailed
from stackmatrix.runners.images import LABEL

if TYPE_CHECKING:
    from stackmatrix.kinds import Kind
    from stackmatrix.runners.docker import DockerRunner


@dataclass(frozen=True)
class Wanted:
    """An image the selected cells need: a stock container (``template`` None: run as shipped) or a cell image
    built from ``images/<template>`` on ``base``. ``here``: what this Docker engine already holds (the stock image,
    or a cell image built before for this stack on this base), as ``tag (id)``; None: to pull or to build."""

    stack: Stack
    base: str
    template: str | None
    here: str | None

    @property
    def stock(self) -> bool:
        return self.template is None


@dataclass(frozen=True)
class Made:
    """What making one image did: ``how`` is here, pulled, reused (a cell image of the same content) or built;
    ``failed``: why it could not be made ("" when it was)."""

    stack: str
    ref: str
    how: str
    seconds: float
    failed: str = ""


def wanted(runner: DockerRunner, stack: Stack, kind: Kind) -> Wanted | None:
    """The image ``stack``'s cells run in under the docker runner; None where its kind has no image."""
    plan = kind.image(stack, runner.o.triton_images)
    if plan is None:
        return None
    base = plan.base or runner.o.base
    if plan.as_is:
        return Wanted(stack, base, None, _here(runner.client, base))
    labels = [f"{LABEL}.stack={stack.id}", f"{LABEL}.base={base}", f"{LABEL}.kind={plan.template}"]
    built = runner.client.images.list(filters={"label": labels})
    own = f"stackmatrix/{plan.template}:"  # an image may carry other tags (a site retagged it, a test used it)
    newest = max(
        built, key=lambda i: (any(t.startswith(own) for t in i.tags), str(i.attrs.get("Created", ""))), default=None
    )
    if newest is None:
        return Wanted(stack, base, plan.template, None)
    tags = sorted(newest.tags, key=lambda t: not t.startswith(own))
    return Wanted(stack, base, plan.template, f"{tags[0] if tags else '?'} ({_short(newest.id)})")


def _here(client: Any, ref: str) -> str | None:
    """``ref`` as this engine holds it: by the registry digest it was pulled by where it has one, else its id."""
    try:
        image = client.images.get(ref)
        name = ref.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]  # a tag is after the last slash (a port is before it)
        repository = name[: len(name) - len(last)] + last.split(":", 1)[0]
        digests = [d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or [] if d.startswith(f"{repository}@")]
        return f"{ref} ({digests[0] if digests else _short(image.id)})"
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise InfraUnavailable(f"docker could not look up {ref}: {exc}") from None


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def make(runner: DockerRunner, want: Wanted, kind: Kind) -> Made:
    """Pull or build the image as a run would (the same code: ``DockerRunner.prepare``); a stack whose image cannot
    be made is reported with why (its build's own failure), never ends the others."""
    t0 = time.perf_counter()
    try:
        env = runner.prepare(want.stack, kind)
    except EnvBuildFailed as exc:
        return Made(want.stack.id, want.base, "failed", time.perf_counter() - t0, redact(f"{exc.reason}: {exc}"))
    assert env.container is not None, "the docker runner's environments are images"
    how = ("here" if want.here else "pulled") if want.stock else ("reused" if env.reused else "built")
    return Made(want.stack.id, env.container.image, how, time.perf_counter() - t0)


def destination(ref: str, registry: str) -> tuple[str, str]:
    """Where ``ref`` goes in ``registry``: its repository path kept (``nvidia/tritonserver``,
    ``stackmatrix/triton-vllm``), its tag kept."""
    parsed = parse_ref(ref, "image build")
    return f"{registry}/{parsed.repository}", parsed.tag or (parsed.digest or "latest").replace(":", "-")


def push(client: Any, ref: str, registry: str) -> str:
    """Push the local image ``ref`` to ``registry``: "pushed", or "there" when the registry already holds this
    image under that tag (the digest Docker recorded at an earlier push is the one the registry serves)."""
    repository, tag = destination(ref, registry)
    try:
        image = client.images.get(ref)
        pushed_before = {
            d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or [] if d.startswith(f"{repository}@")
        }
        if pushed_before and _served_digest(client, f"{repository}:{tag}") in pushed_before:
            return "there"
        image.tag(repository, tag)
        for event in client.images.push(repository, tag=tag, stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise InfraUnavailable(redact(f"docker could not push {repository}:{tag}: {event['error']}"))
    except docker.errors.APIError as exc:
        raise InfraUnavailable(redact(f"docker could not push {repository}:{tag}: {exc}")) from None
    return "pushed"


def _served_digest(client: Any, name: str) -> str | None:
    """The digest the registry serves for ``name`` (asked through the Docker engine, with its credentials)."""
    try:
        descriptor = client.api.inspect_distribution(name).get("Descriptor") or {}
    except docker.errors.APIError:
        return None  # not there, or not readable: push
    digest = descriptor.get("digest")
    return digest if isinstance(digest, str) else None


def plan_lines(wants: Sequence[Wanted]) -> list[str]:
    """The plan as the command prints it: one line per image, then what will be done."""
    width = max((len(w.stack.id) for w in wants), default=0)
    lines = []
    for w in wants:
        what = "stock  " if w.stock else "derived"
        on = w.base if w.stock else f"{w.template} on {w.base}"
        state = f"here: {w.here}" if w.here else ("to pull" if w.stock else "to build")
        lines.append(f"  {what}  {w.stack.id:<{width}}  {on}  [{state}]")
    pull = sum(1 for w in wants if w.stock and not w.here)
    build = sum(1 for w in wants if not w.stock and not w.here)
    here = len(wants) - pull - build
    lines.append(
        f"{len(wants)} image{'' if len(wants) == 1 else 's'}: {pull} to pull, {build} to build, {here} here "
        "(a cell image built before is checked again once its wheels are staged)"
    )
    return lines

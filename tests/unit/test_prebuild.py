"""``image build``'s pure parts: where an image goes in a registry, how the plan reads, what ``--push`` takes (the
real dockerd and registry: tests/integration/test_triton_real.py)."""

from __future__ import annotations

import pytest

from stackmatrix.cli.main import main
from stackmatrix.domain import Stack, StackKind
from stackmatrix.runners.prebuild import Wanted, destination, plan_lines


@pytest.mark.parametrize(
    ("ref", "where"),
    [
        (
            "stackmatrix/triton-vllm:0123456789abcdef",
            ("reg.lab:5000/mirror/stackmatrix/triton-vllm", "0123456789abcdef"),
        ),
        (
            "nvcr.io/nvidia/tritonserver:26.04-vllm-python-py3",
            ("reg.lab:5000/mirror/nvidia/tritonserver", "26.04-vllm-python-py3"),
        ),
        ("python:3.11-slim-bookworm", ("reg.lab:5000/mirror/library/python", "3.11-slim-bookworm")),
        (
            "nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64,
            ("reg.lab:5000/mirror/nvidia/tritonserver", "sha256-" + "a" * 64),
        ),
    ],
)
def test_an_image_keeps_its_repository_path_and_tag_in_the_registry(ref: str, where: tuple[str, str]) -> None:
    assert destination(ref, "reg.lab:5000/mirror") == where


def test_the_plan_says_what_is_here_and_what_is_to_pull_or_build() -> None:
    stock = Stack(StackKind("triton-vllm"), "0.19.0", "4.57.6", "3.12", "26.04", "@release-day")
    derived = Stack(StackKind("triton-vllm"), "0.34.0", "5.24.0", "3.12", "26.04")
    vllm = Stack(StackKind("vllm"), "0.34.0", "5.24.0", "3.12")
    base = "nvcr.io/nvidia/tritonserver:26.04-vllm-python-py3"
    lines = plan_lines(
        [
            Wanted(stock, base, None, None),
            Wanted(derived, base, "triton-vllm", "stackmatrix/triton-vllm:abc (0123456789ab)"),
            Wanted(vllm, "python:3.11-slim-bookworm", "vllm", None),
        ]
    )
    assert lines[0].split() == ["stock", "triton-26.04", base, "[to", "pull]"]
    assert lines[1].endswith("[here: stackmatrix/triton-vllm:abc (0123456789ab)]") and "triton-vllm on " in lines[1]
    assert lines[2].endswith("[to build]")
    assert lines[3].startswith("3 images: 1 to pull, 1 to build, 1 here")


@pytest.mark.parametrize("value", ["bad host!", "reg.lab:5000/Upper", "https://reg.lab", "reg.lab:123456", ""])
def test_push_takes_a_registry_and_nothing_else(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "build", "--push", value, "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stackmatrix image build: argument --push: got ") and "a registry host[:port][/path]" in err

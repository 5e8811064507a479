"""The command line's shape: every command parses the flags it documents (no network)."""

from __future__ import annotations

import pytest

from stackmatrix.cli import build_parser, main


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "-k", "e4b", "--only", "vllm-*", "--shard", "1/2", "--json"],
        ["run", "--tier", "runtime", "--full-class", "--override", "torch==2.13.0", "--resolve", "full", "--quiet"],
        ["check", "--model", "gemma-4-E4B-it", "--triton", "26.03", "--tier", "runtime", "--override", "x==1"],
        ["tiny", "build", "gemma-4-E2B-it", "--transformers", "5.19.0", "--full-class", "--override", "torch==2.13.0"],
        ["history", "-k", "e4b", "--only", "vllm-*", "--last", "3", "--format", "json"],
        ["diff", "RUN_A", "RUN_B", "--format", "md", "--output", "diff.md"],
        ["report", "RUN", "--format", "html,tex", "--format", "png", "--out", "out", "-k", "l4x1", "--title", "T"],
        ["merge", "shard-1", "shard-2", "--exit-status", "shard-2=137"],
        ["gate", "--policy", "p.toml", "--candidate", "triton=26.04", "--baseline", "RUN", "--tier", "runtime"],
    ],
)
def test_commands_parse_their_flags(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if "--override" in argv:
        assert args.override and args.full_class in (True, False)


def test_bad_flag_values_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--shard", "3/2", "--offline", "--cache-dir", "/nonexistent-cache"]) == 2
    assert main(["list", "-k", "e4b and", "--offline", "--cache-dir", "/nonexistent-cache"]) == 2
    assert main(["check", "--model", "gemma-9", "--offline"]) == 2
    assert "model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "--tier", "warp"])
    assert exc.value.code == 2

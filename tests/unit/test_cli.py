"""The command line's shape: every command parses the flags it documents (no network)."""

from __future__ import annotations

from pathlib import Path

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


def test_a_bug_is_one_line_and_a_redacted_crash_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: object) -> int:
        raise RuntimeError("exploded near https://alice:pw-0123456789@mirror.local/simple?token=tok-0123456789")

    monkeypatch.setenv("STACKMATRIX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("stackmatrix.cli.command", lambda name: boom)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stackmatrix: internal error: RuntimeError")
    (log,) = (tmp_path / "crash").iterdir()
    assert str(log) in err
    text = log.read_text()
    assert "Traceback" in text and "boom" in text
    assert "pw-0123456789" not in text + err and "tok-0123456789" not in text + err


def test_usage_errors_and_help_return_their_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--tier", "warp"]) == 2
    assert main(["--version"]) == 0
    assert main([]) == 2
    capsys.readouterr()


def test_os_faults_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "reports"
    assert main(["history", "--reports-dir", str(out)]) == 2  # a file stands where a directory must be
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "file") in err

"""The command line's shape: every command parses the flags it documents (no network)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from stackmatrix.cli.args import build_parser, request_of
from stackmatrix.cli.main import main
from stackmatrix.options import OPTIONS
from stackmatrix.request import FLAGS, Request, option_sources


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
    request = request_of(build_parser().parse_args(argv))
    assert request.command == " ".join(argv[:2]) if argv[0] == "tiny" else request.command == argv[0]
    if "--override" in argv:
        assert request.override and request.full_class in (True, False)


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
    monkeypatch.setattr("stackmatrix.cli.main.command", lambda name: boom)
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


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser by its name, nested ones included (``tiny build``)."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = sub
                out |= {f"{name} {k}": v for k, v in _commands(sub).items()}
    return out


def test_every_command_takes_a_shared_option_the_same_way() -> None:
    """Arguments are generated from the records: where two commands take a setting or a flag that shapes a run,
    its flag, help, choices and default are the same, and a setting's help names its variable."""
    seen: dict[str, tuple[object, ...]] = {}
    shared = {n for n, o in FLAGS.items() if o.recorded} | set(OPTIONS)
    for name, parser in _commands(build_parser()).items():
        for action in parser._actions:
            opt = OPTIONS.get(action.dest) or FLAGS.get(action.dest)
            if opt is None or action.dest not in shared:
                continue
            shape = (tuple(action.option_strings), action.help, action.choices, action.default, action.nargs)
            assert seen.setdefault(opt.name, shape) == shape, (name, opt.name)
            assert action.option_strings == [opt.flag]
            if opt.env:
                assert action.help == f"{opt.help} [env {opt.env}]"
    assert set(seen) == shared


def test_the_command_line_records_what_it_gave() -> None:
    def parse(argv: list[str]) -> Request:
        return request_of(build_parser().parse_args(argv))

    request = parse(["run", "--tier", "static", "--only", "a*", "--only", "b*", "--jobs", "3", "--resume"])
    assert (request.tier, request.only, request.resume, request.plan, request.override) == (
        "static", ("a*", "b*"), "", False, ()
    )  # fmt: skip
    assert request.given == {"tier", "only", "jobs", "resume"} and request.texts == {"jobs": "3"}
    options = option_sources(request.settings(), request)
    assert options["tier"] == {"value": "static", "source": "cli --tier"}
    assert options["resolve"] == {"value": "declared", "source": "default"}
    assert options["jobs"] == {"value": 3, "source": "cli --jobs"}
    assert parse(["run", "--resume", "20260101T0000"]).resume == "20260101T0000"
    assert parse(["run"]).resume is None and parse(["list", "--plan"]).plan is True
    assert parse(["history"]).given == frozenset()
    # A command reads the default of a flag it does not take; an answer on the terminal stores nothing.
    check = parse(["check", "--model", "m"])
    assert (check.tier, check.only, check.stores, check.quiet, check.format) == ("static", (), False, True, "table")
    assert parse(["advise", "--model", "a", "--model", "b", "--tier", "runtime"]).models == ("a", "b")
    assert parse(["advise", "--tier", "runtime"]).tier == "static"  # its candidates: static, the best few climb
    assert parse(["advise", "--tier", "runtime"]).answer_tier == "runtime"
    assert parse(["report", "--format", "md", "--format", "png"]).formats == ("md", "png")
    assert parse(["merge", "a", "b"]).dirs == (Path("a"), Path("b"))
    assert parse(["diff"]).runs == () and parse(["tiny", "build", "m"]).model == "m"

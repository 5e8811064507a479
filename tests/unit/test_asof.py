"""``--as-of``: the value where it enters, the index's view (a loopback mirror with upload times), the catalog's
view, and the proof the issue asks for: the mirror gains releases between two runs; with the same as-of the tables
are byte-identical, without it they differ."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.asof import AsOf, moment, parse_as_of, uv_args
from stackmatrix.cli.main import main
from stackmatrix.errors import BadInput
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.store.runs import run_dirs
from stackmatrix.wheels.http import Http
from stackmatrix.wheels.index import Index
from tests.mirror import SMALL_MATRIX, Server, _transformers, _vllm, stack_mirror


def test_a_date_is_the_end_of_that_day_in_utc() -> None:
    a = parse_as_of("--as-of", "2026-04-02")
    assert str(a) == "2026-04-02"
    assert a.sees(moment("2026-04-02T23:59:59.999999Z")) and not a.sees(moment("2026-04-03T00:00:00Z"))
    assert uv_args(a) == ["--exclude-newer", "2026-04-02T23:59:59.999999Z"]
    assert uv_args(None) == []


def test_a_time_is_recorded_in_utc_and_seen_to_the_microsecond() -> None:
    a = parse_as_of("env STACKMATRIX_AS_OF", "2026-04-02T14:30:00+02:00")
    assert str(a) == "2026-04-02T12:30:00Z"
    assert parse_as_of("x", str(a)) == a  # the recorded text reads back as the same instant (resume, Slurm)
    assert a.sees(moment("2026-04-02T12:30:00Z")) and not a.sees(moment("2026-04-02T12:30:00.000001Z"))
    assert str(parse_as_of("x", "2026-04-02t12:30:00.250z")) == "2026-04-02T12:30:00.25Z"
    # an index's upload times with nanoseconds are cut to microseconds, never refused
    assert moment("2026-04-02T12:30:00.123456789Z") == datetime(2026, 4, 2, 12, 30, 0, 123456, UTC)


@pytest.mark.parametrize(
    "bad", ["", "yesterday", "2026-13-01", "2026-02-30", "2026-04-02T12:30", "2026-04-02 12:30:00", "9999-12-31"]
)
def test_a_bad_or_future_as_of_is_exit_2_naming_where(bad: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_as_of("--as-of", bad)
    assert info.value.exit_code == 2 and info.value.where == "--as-of" and "RFC 3339" in info.value.expected


def test_the_flag_and_the_variable_reach_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--as-of", "tomorrow"]) == 2
    assert "--as-of: key 'as_of': got 'tomorrow'" in capsys.readouterr().err
    from stackmatrix.options import resolve_settings

    s = resolve_settings({}, {"STACKMATRIX_AS_OF": "2026-04-02"})
    assert isinstance(s.as_of, AsOf) and s.sources["as_of"] == "env STACKMATRIX_AS_OF"
    assert resolve_settings({}, {}).as_of is None  # the default: the newest


@pytest.fixture
def mirror() -> Iterator[Server]:
    server = stack_mirror()
    try:
        yield server
    finally:
        server.close()


def _index(server: Server, cache: Path, as_of: str | None, ttl: float = 3600, offline: bool = False) -> Index:
    view = parse_as_of("--as-of", as_of) if as_of else None
    return Index(Http(offline=offline), cache, f"{server.url}/simple", ttl_s=ttl, as_of=view)


def test_the_index_view_keeps_the_files_uploaded_by_then(mirror: Server, tmp_path: Path) -> None:
    now = _index(mirror, tmp_path, None)
    assert [str(v) for v in now.versions("vllm")] == ["0.18.0", "0.19.0", "0.20.0"]
    then = _index(mirror, tmp_path, "2026-04-02")  # vllm 0.19.0 came on 2026-04-03
    assert [str(v) for v in then.versions("vllm")] == ["0.18.0"]
    assert [str(v) for v in then.versions("transformers")] == ["4.57.6", "5.5.0"]  # 5.5.0: on the day itself


def test_a_listing_fetched_after_the_as_of_is_used_whatever_its_age(mirror: Server, tmp_path: Path) -> None:
    assert _index(mirror, tmp_path, "2026-04-02", ttl=0).versions("vllm")  # fetched now: after the as-of
    mirror.add_project("vllm", {"vllm-0.18.1-cp38-abi3-manylinux_2_28_x86_64.whl": _vllm("0.18.1", "<5", False)})
    seen = len(mirror.log)
    again = _index(mirror, tmp_path, "2026-04-02", ttl=0)  # a TTL of 0 would ask the index again...
    assert [str(v) for v in again.versions("vllm")] == ["0.18.0"]
    assert len(mirror.log) == seen  # ...but the past cannot change: the cached listing answers
    assert "0.18.1" in [str(v) for v in _index(mirror, tmp_path, None, ttl=0).versions("vllm")]  # newest: asks


def test_a_listing_fetched_before_the_as_of_is_asked_again_however_young(mirror: Server, tmp_path: Path) -> None:
    """A listing cached on 2026-04-01 cannot show what came up to an as-of of 2026-05-15: it is fetched again even
    within its TTL (without an as-of, the TTL alone decides)."""
    _index(mirror, tmp_path, None).versions("vllm")
    (listing,) = tmp_path.glob("index/*/vllm.json")
    doc = json.loads(listing.read_text())
    doc["fetched_at"] = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
    mirror.add_project("vllm", {"vllm-0.18.1-cp38-abi3-manylinux_2_28_x86_64.whl": _vllm("0.18.1", "<5", False)})
    listing.write_text(json.dumps(doc))
    assert "0.18.1" in [str(v) for v in _index(mirror, tmp_path, "2026-05-15", ttl=1e9).versions("vllm")]
    doc["fetched_at"] = time.time()
    listing.write_text(json.dumps(doc))
    assert "0.18.1" not in [str(v) for v in _index(mirror, tmp_path, None, ttl=1e9).versions("vllm")]


def test_a_version_after_the_as_of_is_not_found_and_not_asked_for_again(mirror: Server, tmp_path: Path) -> None:
    from stackmatrix.wheels.index import VersionNotFound

    then = _index(mirror, tmp_path, "2026-04-02")
    then.versions("vllm")
    seen = len(mirror.log)
    with pytest.raises(VersionNotFound):
        then.wheel("vllm", "0.20.0")
    assert len(mirror.log) == seen


def test_an_index_without_upload_times_is_exit_2_naming_it(mirror: Server, tmp_path: Path) -> None:
    html = Index(Http(), tmp_path, f"{mirror.url}/html", as_of=parse_as_of("--as-of", "2026-04-02"))
    with pytest.raises(BadInput) as info:
        html.versions("vllm")
    err = info.value
    assert err.exit_code == 2 and f"{mirror.url}/html" in err.where and err.key == "vllm: upload-time"
    assert "upload time" in err.expected
    assert [str(v) for v in Index(Http(), tmp_path, f"{mirror.url}/html").versions("vllm")]  # no as-of: fine


def test_the_catalog_as_of_leaves_out_the_releases_published_after() -> None:
    catalog = load_catalog()
    assert all(r.published for r in catalog.triton.values())
    then = catalog.as_of(parse_as_of("--as-of", "2026-11-01"))
    assert "26.09" in then.triton and "26.10" not in then.triton and "26.11" not in then.triton
    assert set(then.later) == {"26.10", "26.11"}
    assert "26.11 was published 2026-11-17" in then.unknown_release("26.11")
    assert catalog.as_of(None) is catalog


def test_a_release_with_no_date_gets_one_inferred_and_labelled(tmp_path: Path) -> None:
    from stackmatrix.files.embedded import data_dir

    for name in ("gpus.toml", "models.toml", "cuda.toml"):
        (tmp_path / name).write_bytes((data_dir() / name).read_bytes())
    text = (data_dir() / "triton.toml").read_text()
    (tmp_path / "triton.toml").write_text(text.replace('published = "2026-11-17"\n', "", 1))
    r = load_catalog(tmp_path).triton["26.11"]
    assert (r.published, r.published_source) == (
        "2026-12-01",
        "inferred: the first day of the month after the release's",
    )
    (tmp_path / "triton.toml").write_text(text.replace('published = "2026-11-17"', 'published = "2026-11-31"', 1))
    with pytest.raises(BadInput) as info:
        load_catalog(tmp_path)
    assert info.value.key.endswith(".published") and info.value.value == "2026-11-31"


def test_check_of_a_release_not_out_by_then_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["check", "--model", "google/gemma-4-E4B-it", "--triton", "26.11", "--as-of", "2026-11-01"]
    assert main([*argv, "--cache-dir", str(tmp_path), "--offline"]) == 2
    assert "a Triton release out by the --as-of (26.11 was published 2026-11-17)" in capsys.readouterr().err


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("STACKMATRIX_")]:
        monkeypatch.delenv(name)


def test_the_same_as_of_gives_the_same_tables_whatever_upstream_published_since(
    mirror: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's proof: two runs with ``--as-of``, the mirror gaining a vLLM and a transformers release (and
    the listing cache expiring) between them: readiness.csv and readiness.json byte-identical; two runs without
    it see the new releases and differ."""
    _clean_env(monkeypatch)
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(SMALL_MATRIX.replace('vllm = ["0.19.0", "0.20.0"]', 'vllm = { from = "0.19.0" }'))
    common = ["--matrix", str(matrix), "--index-url", mirror.index_url, "--index-ttl", "0", "--quiet"]

    def tables(name: str, *extra: str) -> dict[str, bytes]:
        reports = tmp_path / name
        argv = ["run", *common, "--cache-dir", str(tmp_path / f"cache-{name}"), "--reports-dir", str(reports)]
        assert main([*argv, *extra]) == 0
        return {f: (reports / "latest" / f).read_bytes() for f in ("readiness.csv", "readiness.json")}

    as_of = ["--as-of", "2026-05-15"]
    first, before = tables("first", *as_of), tables("before")
    mirror.add_project(
        "vllm",
        {"vllm-0.21.0-cp38-abi3-manylinux_2_28_x86_64.whl": _vllm("0.21.0", ">=5.5.0", True)},
        upload="2026-06-01T00:00:00Z",
    )
    mirror.add_project(
        "transformers",
        {"transformers-5.7.0-py3-none-any.whl": _transformers("5.7.0", True)},
        upload="2026-06-02T00:00:00Z",
    )
    time.sleep(0.01)  # the first run's listings are older than the TTL of 0
    second, after = tables("second", *as_of), tables("after")
    assert second == first  # byte for byte
    assert after != before  # the newest view saw what came
    assert b"vllm-0.21.0" in after["readiness.csv"] and b"tf5.7.0" in after["readiness.csv"]
    assert b"vllm-0.21.0" not in second["readiness.csv"] and b"tf5.7.0" not in second["readiness.csv"]
    (run,) = run_dirs(tmp_path / "second")
    recorded = json.loads((run / "run.json").read_text())["options"]["as_of"]
    assert recorded == {"value": "2026-05-15", "source": "cli --as-of"}
    capsys.readouterr()


def _gain_releases(server: Server) -> None:
    """Upstream publishes after the as-of: a vLLM and a transformers release."""
    wheel = "vllm-0.21.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    server.add_project("vllm", {wheel: _vllm("0.21.0", ">=5.5.0", True)}, upload="2026-06-01T00:00:00Z")
    wheel = "transformers-5.7.0-py3-none-any.whl"
    server.add_project("transformers", {wheel: _transformers("5.7.0", True)}, upload="2026-06-02T00:00:00Z")


def _options(run: Path) -> dict[str, Any]:
    options: dict[str, Any] = json.loads((run / "run.json").read_text())["options"]
    return options


def test_resume_continues_in_the_view_the_run_started_in(
    mirror: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run with --as-of killed midway (SIGKILL), upstream publishing meanwhile: ``--resume`` without the flag
    takes the recorded as-of and finishes the table the uninterrupted run gives; another as-of is exit 2."""
    from tests.unit.test_workflow import KILLER, SRC

    _clean_env(monkeypatch)
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(SMALL_MATRIX.replace('vllm = ["0.19.0", "0.20.0"]', 'vllm = { from = "0.19.0" }'))
    where = ["--matrix", str(matrix), "--index-url", mirror.index_url, "--cache-dir", str(tmp_path / "cache")]
    where += ["--index-ttl", "0", "--quiet"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["run", *where, "--reports-dir", str(whole), "--as-of", "2026-05-15"]) == 0
    script = textwrap.dedent(KILLER.format(src=str(SRC), at=6))
    argv = [sys.executable, "-c", script, "run", *where, "--reports-dir", str(killed), "--as-of", "2026-05-15"]
    assert subprocess.run(argv, env=dict(os.environ), check=False).returncode == -signal.SIGKILL
    _gain_releases(mirror)
    (run,) = run_dirs(killed)
    capsys.readouterr()
    resume = ["run", "--resume", *where, "--reports-dir", str(killed)]
    assert main([*resume, "--as-of", "2026-06-30"]) == 2
    assert "options.as_of" in capsys.readouterr().err
    assert main(resume) == 0
    assert (killed / "latest" / "readiness.csv").read_bytes() == (whole / "latest" / "readiness.csv").read_bytes()
    assert _options(run)["as_of"]["value"] == "2026-05-15"


def test_merge_refuses_shards_of_two_views_and_gate_baseline_adopts_its_view(
    mirror: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clean_env(monkeypatch)
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(SMALL_MATRIX)
    where = ["--matrix", str(matrix), "--index-url", mirror.index_url, "--cache-dir", str(tmp_path / "cache")]
    shards = [tmp_path / "s1", tmp_path / "s2"]
    for n, (shard, as_of) in enumerate(zip(shards, ("2026-05-15", "2026-05-16"), strict=True)):
        argv = ["run", *where, "--quiet", "--shard", f"{n + 1}/2", "--reports-dir", str(shard), "--as-of", as_of]
        assert main(argv) == 0
    capsys.readouterr()
    assert main(["merge", *map(str, shards), "--reports-dir", str(tmp_path / "merged")]) == 2
    assert "as_of" in capsys.readouterr().err
    assert not (tmp_path / "merged" / "runs").exists() or run_dirs(tmp_path / "merged") == []

    policy = tmp_path / "p.toml"
    policy.write_text('name = "p"\n[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "l4x1"\n')
    base = run_dirs(shards[0])[0]
    gate = ["gate", "--policy", str(policy), "--candidate", "vllm=0.20.0", "--baseline", str(base), *where]
    assert main([*gate, "--reports-dir", str(shards[0]), "--as-of", "2026-05-20"]) == 2  # another view: refused
    assert "options.as_of" in capsys.readouterr().err
    assert main([*gate, "--reports-dir", str(shards[0])]) in (0, 1)
    (gated,) = [r for r in run_dirs(shards[0]) if r != base]
    assert _options(gated)["as_of"] == {"value": "2026-05-15", "source": f"run {base.name}"}

"""Secrets never leave memory: a run against a credentialed mirror (``user:password@`` and ``?token=``) that
misbehaves in every way a mirror does, and every command over what it stored; then every file under the reports
and cache directories, and everything printed, is searched for the secrets (raw and URL-encoded)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from stackmatrix.cli.main import main
from tests.mirror import MODES, SMALL_MATRIX, Server, stack_mirror

PASSWORD = "pw-s3cr3t/9@x"  # a "/" and an "@": the URL carries it percent-encoded, errors may quote it decoded
TOKEN = "tok-7f3a9c1e5b"
ENV_TOKEN = "hf_envtoken123456"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), TOKEN, ENV_TOKEN)


@pytest.fixture(scope="module")
def mirror() -> Iterator[Server]:
    server = stack_mirror(user="alice", password=PASSWORD, token=TOKEN)
    yield server
    server.close()


def _leaks(root: Path) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        found += [f"{path}: {s!r}" for s in SECRETS if s.encode() in data]
    return found


def test_no_secret_reaches_a_file_or_the_terminal(
    mirror: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    matrix = tmp_path / "m.toml"
    matrix.write_text(SMALL_MATRIX)
    policy = tmp_path / "p.toml"
    policy.write_text('name = "p"\n[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "l4x1"\n')
    reports = tmp_path / "reports"
    common = ["--matrix", str(matrix), "--index-url", mirror.index_url, "--reports-dir", str(reports)]
    codes = {}
    for mode in MODES:
        mirror.mode = mode
        # a cache of its own per mode: facts cached by an earlier mode must not hide the misbehaviour
        # --fresh: a stored record with the same fingerprint would answer without touching the mirror
        in_mode = [*common, "--cache-dir", str(tmp_path / "cache" / mode), "--fresh"]
        codes[mode] = (
            main(["run", "--quiet", *in_mode]),
            main(["check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", *in_mode]),
            main(["gate", "--policy", str(policy), "--candidate", "vllm=0.20.0", *in_mode]),
        )
    mirror.mode = "ok"
    cache = ["--cache-dir", str(tmp_path / "cache" / "ok")]
    full = main(["check", "--model", "gemma-4-E4B-it", "--resolve", "full", *common, *cache])
    stored = [
        main(["report", "--reports-dir", str(reports), "--format", "txt,md,csv,json,html,junit"]),
        main(["history", "--reports-dir", str(reports), "-k", "e4b"]),
        main(["diff", "--reports-dir", str(reports), "--format", "json"]),
    ]
    out = capsys.readouterr()
    assert codes["ok"] == (0, 0, 0) and full == 0 and stored == [0, 0, 0]
    # every misbehaviour is the infrastructure's (exit 4), never a crash or a verdict
    assert all(c == (4, 4, 4) for mode, c in codes.items() if mode not in ("ok", "bad-hash")), codes
    assert "Traceback" not in out.err and "internal error" not in out.err
    assert [s for s in SECRETS if s in out.out + out.err] == []
    assert _leaks(tmp_path) == []
    assert "***" in out.err  # the URLs were named, redacted


def test_the_cache_keys_on_the_index_without_credentials(mirror: Server, tmp_path: Path) -> None:
    """Two spellings of one mirror, with and without credentials, share one listing cache."""
    from stackmatrix.wheels.http import Http
    from stackmatrix.wheels.index import Index

    with_creds = Index(Http(), tmp_path, mirror.index_url)
    without = Index(Http(), tmp_path, f"{mirror.url}/simple")
    assert with_creds.cache_dir == without.cache_dir
    assert PASSWORD not in with_creds.index_url and TOKEN not in with_creds.index_url

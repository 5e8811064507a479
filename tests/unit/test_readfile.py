"""Files from outside are read without ever hanging or crashing: FIFOs, devices and directories are refused
before a byte is read; bad encodings, bad syntax and deep nesting are bad input; damaged caches read as absent."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.files.readfile import cached_bytes, cached_json, parse_toml, read_bytes, read_json, read_text
from stackmatrix.files.tomlfile import read_toml


def _hostile(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    (tmp_path / "dir.toml").mkdir()
    (tmp_path / "bin.toml").write_bytes(bytes(range(256)))
    (tmp_path / "latin1.toml").write_bytes("name = 'caf\xe9'\n".encode("latin-1"))
    dangling = tmp_path / "dangling.toml"
    dangling.symlink_to(tmp_path / "nowhere")
    return {
        "fifo": fifo,
        "loop": loop,
        "dir": tmp_path / "dir.toml",
        "binary": tmp_path / "bin.toml",
        "latin-1": tmp_path / "latin1.toml",
        "missing": tmp_path / "missing.toml",
        "dangling": dangling,
        "device": Path("/dev/zero"),
    }


def test_hostile_files_are_bad_input_at_once(tmp_path: Path) -> None:
    for name, path in _hostile(tmp_path).items():
        t0 = time.perf_counter()
        with pytest.raises(BadInput) as exc:
            read_toml(path)
        assert exc.value.where == str(path), name
        assert time.perf_counter() - t0 < 1, f"{name} took too long"  # a FIFO must not block


def test_a_fifo_with_a_writer_is_still_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("a = 1\n"), daemon=True)
    writer.start()
    with pytest.raises(BadInput, match="regular file"):
        read_bytes(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # let the writer finish before its folder is removed
    writer.join(timeout=30)
    os.close(reader)
    assert not writer.is_alive()


def test_syntax_encoding_and_nesting(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="valid TOML"):
        parse_toml("m.toml", b"a = [")
    with pytest.raises(BadInput, match="UTF-8"):
        parse_toml("m.toml", b"a = '\xff'")
    with pytest.raises(BadInput, match="nested too deeply"):
        parse_toml("m.toml", b"a = " + b"[" * 5000 + b"]" * 5000)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadInput, match="nested too deeply"):
        read_json(deep)
    (tmp_path / "t.txt").write_text("ok")
    assert read_text(tmp_path / "t.txt") == "ok"


def test_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(BadInput, match="at most 1024 bytes"):
        read_bytes(big, limit=1024)


def test_damaged_cache_entries_read_as_absent(tmp_path: Path) -> None:
    for name, path in _hostile(tmp_path).items():
        assert cached_json(path) is None, name
        assert (cached_bytes(path) is None) is (name not in ("binary", "latin-1")), name
    (tmp_path / "bad.json").write_text('{"a": ')
    assert cached_json(tmp_path / "bad.json") is None
    (tmp_path / "good.json").write_text('{"a": 1}')
    assert cached_json(tmp_path / "good.json") == {"a": 1}

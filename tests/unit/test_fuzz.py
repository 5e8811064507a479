"""Property-based fuzzing of every input through the real parsers and ``cli.main``.

Inputs: matrix files (arbitrary bytes and structure-aware mutations of a valid one), catalogs beside a matrix,
gate policies, candidate specs, ``check`` flags, ``-k`` / ``--only`` / ``--shard``, version strings, run refs
(``report``, ``diff``, ``history``, ``merge``, ``--exit-status``) and planted run directories.

The contract every example checks (``cli.main`` returns an exit code and never raises):

- the exit code is in the allowed set (0 ok, 2 bad input, 3 nothing selected; ``gate`` may also say 1);
- no ``internal error`` line, no traceback, and no new crash log under ``<cache>/crash``;
- at most one line on stderr for exit 2 and 3 (argparse's usage block and ``warning:`` lines aside);
- nothing written outside the folders the command was given (the cache, the reports dir): the working
  directory, the temp dir and the example's own input files stay as they were.

Everything runs against the loopback mirror (tests/mirror.py) with one warm cache for the module; hypothesis is
derandomized and bounded so CI sees the same examples every time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import os
import shutil
import tempfile
import tomllib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stackmatrix.cli.main import main
from stackmatrix.matrix.loaded import CATALOG_FILES
from tests.mirror import SMALL_MATRIX, stack_mirror
from tests.records import drop_record, record_at, replace_record

ROOT = Path(__file__).resolve().parents[2]
CATALOGS = CATALOG_FILES


# A deeper local search: FUZZ_SCALE=10 runs ten times the examples; FUZZ_RANDOM=1 drops the fixed seed (with
# pytest's --hypothesis-seed=N for a given one).
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
SEED = os.environ.get("FUZZ_RANDOM")


def fuzz(n: int) -> settings:
    """Bounded, deterministic, no example database (nothing written to the working directory)."""
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        derandomize=SEED is None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --- the world: one mirror, one warm cache, a store holding two real runs ----------------------------------------


@dataclass
class World:
    base: Path
    cache: Path
    store: Path  # a reports dir holding two real runs
    cwd: Path  # the working directory: must stay empty
    examples: Path
    matrix: Path  # SMALL_MATRIX
    index_url: str
    run_ids: list[str] = field(default_factory=list)
    cell_ids: list[str] = field(default_factory=list)

    @property
    def crash_dir(self) -> Path:
        return self.cache / "crash"

    def net(self, reports: Path | None = None) -> list[str]:
        """The options every probing command gets: explicit cache, index and reports dir."""
        return [
            "--cache-dir",
            str(self.cache),
            "--index-url",
            self.index_url,
            "--reports-dir",
            str(reports or self.examples / "unused-reports"),
        ]


@dataclass(frozen=True)
class Outcome:
    argv: list[str]
    code: int
    out: str
    err: str


def _snapshot(root: Path, skip: Collection[Path]) -> set[str]:
    skipped = {os.path.normpath(p) for p in skip}
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(dirpath, d)) not in skipped]
        for name in dirnames + filenames:
            seen.add(os.path.relpath(os.path.join(dirpath, name), root))
    return seen


def _short(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def cli(world: World, argv: Sequence[str], allowed: Collection[int], writable: Sequence[Path] = ()) -> Outcome:
    """``main(argv)`` with its output captured, checked against the contract. ``writable``: the reports dirs the
    command may write into (the cache always may)."""
    argv = list(argv)
    before = _snapshot(world.base, [world.cache, *writable])
    crashes = set(os.listdir(world.crash_dir)) if world.crash_dir.is_dir() else set()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException as exc:  # main never raises: every ending is an exit code
            raise AssertionError(f"{type(exc).__name__} escaped main({_short(repr(argv))}): {exc}") from exc
    o = Outcome(argv, code, out.getvalue(), err.getvalue())
    what = f"argv={_short(repr(argv))}\nexit={code}\nstderr={_short(o.err)}\nstdout tail={o.out[-800:]!r}"
    if world.crash_dir.is_dir():
        new = sorted(set(os.listdir(world.crash_dir)) - crashes)
        if new:
            log = (world.crash_dir / new[0]).read_text(errors="replace")
            for name in new:
                (world.crash_dir / name).unlink()
            raise AssertionError(f"a crash log was written:\n{what}\n--- {new[0]} ---\n{_short(log, 6000)}")
    assert code in allowed, f"exit {code} not in {sorted(allowed)}\n{what}"
    if "internal error" in o.err:  # its crash log went where the command's own --cache-dir points
        where = o.err.rpartition("traceback in ")[2].strip()
        log = Path(where).read_text(errors="replace") if where and Path(where).is_file() else "(no crash log found)"
        raise AssertionError(f"internal error:\n{what}\n--- {where} ---\n{_short(log, 6000)}")
    assert "Traceback" not in o.err and "Traceback" not in o.out, what
    if code in (2, 3) and "usage:" not in o.err:
        lines = [line for line in o.err.splitlines() if not line.startswith("stackmatrix: warning:")]
        assert len(lines) <= 1, f"more than one line on stderr\n{what}"
    after = _snapshot(world.base, [world.cache, *writable])
    assert after == before, (
        f"written outside {[str(p) for p in writable]}: new {sorted(after - before)[:10]}, "
        f"removed {sorted(before - after)[:10]}\n{what}"
    )
    return o


@contextlib.contextmanager
def box(world: World) -> Iterator[Path]:
    """A fresh folder for one example's inputs (and its reports dir, ``<box>/reports``)."""
    path = Path(tempfile.mkdtemp(dir=world.examples))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("fuzz")
    for name in ("cache", "store", "cwd", "examples", "tmp", "matrix"):
        (base / name).mkdir()
    (base / "matrix" / "m.toml").write_text(SMALL_MATRIX)
    server = stack_mirror()
    w = World(base, base / "cache", base / "store", base / "cwd", base / "examples", base / "matrix" / "m.toml", "")
    w.index_url = server.index_url
    mp = pytest.MonkeyPatch()
    for key in list(os.environ):
        if key.startswith("STACKMATRIX_"):
            mp.delenv(key)
    mp.setenv("STACKMATRIX_CACHE_DIR", str(base / "cache"))  # where crash logs go
    mp.setenv("XDG_CACHE_HOME", str(base / "cache" / "xdg"))
    mp.setattr(tempfile, "tempdir", str(base / "tmp"))
    mp.chdir(base / "cwd")
    try:
        listed = cli(w, ["list", "--matrix", str(w.matrix), *w.net()], {0})
        w.cell_ids = listed.out.split()
        assert len(w.cell_ids) == 12
        for _ in range(2):
            cli(w, ["run", "--quiet", "--matrix", str(w.matrix), *w.net(w.store)], {0}, [w.store])
        w.run_ids = sorted(os.listdir(w.store / "runs"))
        assert len(w.run_ids) == 2
        yield w
    finally:
        mp.undo()
        server.close()


# --- TOML writing and structure-aware mutation ------------------------------------------------------------------


def toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_str(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_doc(doc: dict[str, Any]) -> str:
    """One ``"key" = inline value`` line per top-level key (any document can be written so)."""
    return "".join(f"{toml_str(k)} = {toml_value(v)}\n" for k, v in doc.items())


Path_ = tuple[str | int, ...]


def paths_of(doc: Any, prefix: Path_ = ()) -> list[Path_]:
    out: list[Path_] = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths_of(v, (*prefix, i))
    return out


def _parent(doc: Any, path: Path_) -> Any:
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node


def mutate(
    data: st.DataObject, doc: dict[str, Any], values: st.SearchStrategy[Any], keys: st.SearchStrategy[str]
) -> None:
    """One random edit of ``doc`` in place: replace a value, delete a key or item, rename a key, add a key."""
    paths = paths_of(doc)
    op = data.draw(st.sampled_from(["replace", "replace", "delete", "rename", "add"]))
    if op == "add" or not paths:
        tables = [p for p in [(), *paths] if isinstance(_parent(doc, (*p, "x")), dict)]
        where = data.draw(st.sampled_from(tables))
        _parent(doc, (*where, "x"))[data.draw(keys)] = data.draw(values)
        return
    path = data.draw(st.sampled_from(paths))
    parent = _parent(doc, path)
    if op == "replace":
        parent[path[-1]] = data.draw(values)
    elif op == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):  # rename
        parent[data.draw(keys)] = parent.pop(path[-1])


# --- strategies -----------------------------------------------------------------------------------------------------

TEXT = st.text(max_size=30)
# Names that must never become a file name or an id part: each holds a path separator, a '..', a '__', a space, a
# non-ASCII letter, a leading dot, or is empty or too long.
HOSTILE_FIXED = [
    "",
    ".",
    "..",
    "../x",
    "../../../../escape",
    "../../../../../tmp/escaped",
    "a/b",
    "/abs",
    "/",
    "a\\b",
    "..\\x",
    "a__b",
    "__",
    "a b",
    " ",
    ".hidden",
    "x" * 65,
    "l4x1/..",
    "l4x1/../../x",
    "\u00e9t\u00e9",
    "l4\u2215x1",
    "a\nb",
    "a\tb",
    "a\x00b",
    "C:\\x",
    "a..b",
    "a--b",
    "-a",
    "a-",
]
HOSTILE = st.one_of(
    st.sampled_from(HOSTILE_FIXED),
    st.builds(
        lambda a, bad, b: a + bad + b,
        st.from_regex(r"[a-z0-9]{0,8}", fullmatch=True),
        st.sampled_from(["/", "..", "__", " ", "\\", "\u00e9", "\x00", "\n", "/../", "\u2024\u2024", "\uff0f"]),
        st.from_regex(r"[a-z0-9]{0,8}", fullmatch=True),
    ),
)
IDS = st.one_of(HOSTILE, TEXT, st.from_regex(r"[A-Za-z0-9]+([._+-][A-Za-z0-9]+){0,3}", fullmatch=True))


@st.composite
def pep440(draw: st.DrawFn) -> str:
    """Valid PEP 440 versions in their many spellings (epochs, pre/post/dev, local, 'v', padding, case)."""
    text = draw(st.sampled_from(["", "", "v", "V"]))
    if draw(st.booleans()):
        text += f"{draw(st.integers(0, 10**6))}!"
    text += ".".join(str(n) for n in draw(st.lists(st.integers(0, 10**12), min_size=1, max_size=5)))
    if draw(st.booleans()):
        pre = draw(st.sampled_from(["a", "b", "rc", "alpha", "beta", "c", "pre", "preview", "RC"]))
        text += draw(st.sampled_from(["", ".", "-", "_"])) + pre + str(draw(st.integers(0, 99)))
    if draw(st.booleans()):
        text += draw(st.sampled_from([".post", "-", "post", ".rev", ".r", "_post"])) + str(draw(st.integers(0, 99)))
    if draw(st.booleans()):
        text += draw(st.sampled_from([".dev", "dev", "-dev"])) + str(draw(st.integers(0, 99)))
    if draw(st.booleans()):
        text += "+" + ".".join(draw(st.lists(st.from_regex(r"[a-zA-Z0-9]{1,8}", fullmatch=True), min_size=1)))
    pad = draw(st.sampled_from(["", " ", "\t", "\n"]))
    return pad + text + pad


VERSIONS = st.one_of(
    st.sampled_from(
        [
            "0.18.0",
            "0.19.0",
            "0.20.0",
            "0.19",
            "v0.19.0",
            "0.19.0.0",
            "0!0.19.0",
            "4.57.6",
            "5.5.0",
            "5.6.0",
            "5.6",
            "@newest",
            "@newest-allowed",
            "@release-day",
            "@",
            "@x",
            "",
            " ",
            "0..19",
            "1" * 41,
            "0.19.0+" + "a" * 40,
            "latest",
            "NaN",
            "inf",
            "\u0661.\u0662",
            "0.19.0\x00",
            "../0.19.0",
            "0.19.0/..",
        ]
    ),
    pep440(),
    TEXT,
)
RELEASES = st.one_of(
    st.sampled_from(["24.08", "25.01", "25.12", "26.03", "26.04", "26.11", "99.99", "26.3", "2603", "26.03 ", ""]),
    TEXT,
)
KINDS = st.one_of(st.sampled_from(["vllm", "triton-vllm", "triton-python", "VLLM", "", "triton"]), TEXT)
GPUS = st.one_of(st.sampled_from(["L4", "H100-80GB", "A100-80GB", "L40S", "l4", "L4 ", "", "H100"]), TEXT)
MODELS = st.one_of(
    st.sampled_from(
        [
            "google/gemma-4-E4B-it",
            "gemma-4-e4b-it",
            "GOOGLE/GEMMA-4-E4B-IT",
            " gemma-4-E4B-it ",
            "google/gemma-4-31B-it",
            "gemma-4-31b",
            "gemma-4",
            "google/*",
            "*",
            "",
            "google/../gemma-4-E4B-it",
        ]
    ),
    HOSTILE,
    TEXT,
)
TARGETS = st.one_of(
    st.sampled_from(["l4x1", "h100x1", "l4x2", "L4x4", "h100x999", "l4x1000", "l4x0", "a100-80gbx8", "lx1", "x1"]),
    HOSTILE,
    TEXT,
)
RANGES = st.fixed_dictionaries({"from": VERSIONS}, optional={"to": VERSIONS, "extra": st.integers(), "from_": VERSIONS})
SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -1, 2**63, -(2**63) - 1, 10**30]),
    st.floats(),
    st.sampled_from([math.inf, -math.inf, math.nan, 0.0, -0.0, 1e308, 5e-324]),
    TEXT,
    HOSTILE,
    st.datetimes(),
    st.dates(),
    st.times(),
)
VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
TOML_VALUES = st.one_of(VALUES, VERSIONS, st.lists(VERSIONS, max_size=4), RANGES, IDS, GPUS, MODELS, KINDS)
KEYS = st.one_of(
    st.sampled_from(["kind", "vllm", "transformers", "triton", "note", "gpu", "count", "tp", "include", "from", "to"]),
    TEXT,
    HOSTILE,
)


def small_matrix() -> dict[str, Any]:
    return tomllib.loads(SMALL_MATRIX)


def write_matrix(where: Path, doc: dict[str, Any] | str | bytes) -> Path:
    path = where / "m.toml"
    if isinstance(doc, dict):
        doc = toml_doc(doc)
    path.write_bytes(doc.encode() if isinstance(doc, str) else doc)
    return path


def list_cmd(world: World, matrix: Path, *extra: str) -> list[str]:
    return ["list", "--matrix", str(matrix), *world.net(), *extra]


# --- (1) matrix files ---------------------------------------------------------------------------------------------

RAW = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.integers(1, 3000).map(lambda n: ("a = " + "[" * n + "]" * n).encode()),
    st.integers(1, 3000).map(lambda n: ("a = " + "{b = " * n + "1" + "}" * n).encode()),
    st.integers(1, 1200).map(lambda n: ("[" + ".".join(["a"] * n) + "]\n").encode()),
    st.integers(1, 1200).map(
        lambda n: ("[targets.l4x1]\ngpu = " + "[" * n + "]" * n + "\ncount = 1\ntp = 1\n").encode()
    ),
    st.integers(4000, 6000).map(lambda n: SMALL_MATRIX.replace("count = 1", "count = " + "1" * n, 1).encode()),
    st.integers(1, 3000).map(lambda n: SMALL_MATRIX.replace('"3.12"', '"' + "\\u0000" * n + '"').encode()),
    st.sampled_from(
        [
            b"\xef\xbb\xbf" + SMALL_MATRIX.encode(),  # a BOM
            SMALL_MATRIX.replace("\n", "\r\n").encode(),
            SMALL_MATRIX.encode() + b"\x00",
            SMALL_MATRIX.encode() + b"\xff\xfe",
            SMALL_MATRIX.encode().replace(b"google", b"goo\xc3gle"),
            b"x = 1e99999\n",
            b"x = 0x" + b"f" * 5000 + b"\n",
            b"",
            b"\x00" * 100,
        ]
    ),
)


@fuzz(60)
@given(RAW)
@example(b"a = " + b"1" * 4301 + b"\n")  # more digits than int() converts: a ValueError from tomllib
def test_matrix_bytes(world: World, raw: bytes) -> None:
    with box(world) as where:
        cli(world, list_cmd(world, write_matrix(where, raw)), {0, 2, 3})


@fuzz(40)
@given(raw=st.binary(min_size=1, max_size=40), at=st.integers(0, len(SMALL_MATRIX)), cut=st.integers(0, 40))
def test_matrix_spliced(world: World, raw: bytes, at: int, cut: int) -> None:
    text = SMALL_MATRIX.encode()
    with box(world) as where:
        cli(world, list_cmd(world, write_matrix(where, text[:at] + raw + text[at + cut :])), {0, 2, 3})


@fuzz(60)
@given(data=st.data(), edits=st.integers(1, 3))
def test_matrix_mutated(world: World, data: st.DataObject, edits: int) -> None:
    doc = small_matrix()
    for _ in range(edits):
        mutate(data, doc, TOML_VALUES, KEYS)
    with box(world) as where:
        cli(world, list_cmd(world, write_matrix(where, doc)), {0, 2, 3})


STACK_RULES = st.fixed_dictionaries(
    {"kind": KINDS},
    optional={
        "vllm": st.one_of(st.lists(VERSIONS, max_size=3), RANGES),
        "transformers": st.lists(VERSIONS, max_size=3),
        "triton": st.one_of(st.lists(RELEASES, max_size=3), st.fixed_dictionaries({"from": RELEASES})),
        "note": TEXT,
    },
)
TARGET_SPECS = st.fixed_dictionaries({"gpu": GPUS, "count": st.integers(-2, 10**20), "tp": st.integers(-2, 10**20)})


@fuzz(60)
@given(
    targets=st.dictionaries(TARGETS, TARGET_SPECS, max_size=2),
    stack=st.lists(STACK_RULES, max_size=2),
    include=st.lists(MODELS, max_size=2),
    exclude=st.lists(st.fixed_dictionaries({"cells": TEXT, "reason": TEXT}), max_size=2),
    platform=st.one_of(st.sampled_from(["x86_64", "aarch64", "arm64", ""]), TEXT),
    python=st.one_of(st.sampled_from(["3.12", "3.11", "3.99", "3.1", "2.7", "3"]), TEXT),
)
def test_matrix_fields(
    world: World,
    targets: dict[str, Any],
    stack: list[dict[str, Any]],
    include: list[str],
    exclude: list[dict[str, str]],
    platform: str,
    python: str,
) -> None:
    doc = {
        "settings": {"python": python, "platform": platform},
        "targets": targets,
        "models": {"include": include},
        "stack": stack,
        "exclude": exclude,
    }
    with box(world) as where:
        cli(world, list_cmd(world, write_matrix(where, doc)), {0, 2, 3})


VLLM_RULES = st.fixed_dictionaries(
    {"kind": st.just("vllm"), "vllm": st.one_of(st.lists(VERSIONS, max_size=3), RANGES)},
    optional={"transformers": st.lists(VERSIONS, max_size=3)},
)


@fuzz(25)
@given(
    stack=st.lists(VLLM_RULES, min_size=1, max_size=2),
    exclude=st.lists(st.fixed_dictionaries({"cells": TEXT, "reason": TEXT}), max_size=2),
)
def test_matrix_versions_run(world: World, stack: list[dict[str, Any]], exclude: list[dict[str, str]]) -> None:
    """Random version rules through ``run``: a run that gets going stores its cells under the reports dir only."""
    doc = small_matrix() | {"stack": stack, "exclude": exclude}
    with box(world) as where:
        reports = where / "reports"
        cli(
            world,
            ["run", "--quiet", "--matrix", str(write_matrix(where, doc)), *world.net(reports)],
            {0, 2, 3},
            [reports],
        )


# --- (8) hostile ids: target names, catalog model ids ---------------------------------------------------------------


@fuzz(40)
@given(name=HOSTILE, command=st.sampled_from(["run", "list"]))
def test_hostile_target_name(world: World, name: str, command: str) -> None:
    doc = small_matrix()
    doc["targets"][name] = doc["targets"].pop("l4x1")
    with box(world) as where:
        reports = where / "reports"
        argv = [command, "--matrix", str(write_matrix(where, doc)), *world.net(reports)]
        cli(world, argv + (["--quiet"] if command == "run" else []), {2}, [reports])
        assert not reports.exists() or not any((reports / "runs").glob("*/cells/*"))


def copy_catalogs(where: Path) -> dict[str, dict[str, Any]]:
    docs = {}
    for name in CATALOGS:
        shutil.copy(ROOT / "matrix" / name, where / name)
        docs[name] = tomllib.loads((ROOT / "matrix" / name).read_text())
    return docs


@fuzz(25)
@given(org=st.one_of(st.just("google"), HOSTILE), name=HOSTILE, which=st.integers(0, 16))
def test_hostile_catalog_model_id(world: World, org: str, name: str, which: int) -> None:
    """A models.toml beside the matrix naming a checkpoint with '/', '..' or worse: exit 2, nothing written."""
    model_id = f"{org}/{name}"
    with box(world) as where:
        docs = copy_catalogs(where)
        docs["models.toml"]["model"][which]["id"] = model_id
        (where / "models.toml").write_bytes(toml_doc(docs["models.toml"]).encode())
        matrix = small_matrix()
        matrix["models"]["include"] = ["*"]
        reports = where / "reports"
        argv = ["run", "--quiet", "--matrix", str(write_matrix(where, matrix)), *world.net(reports)]
        cli(world, argv, {2}, [reports])


# --- (2) catalogs beside the matrix -----------------------------------------------------------------------------------


@fuzz(45)
@given(data=st.data(), which=st.sampled_from(CATALOGS), edits=st.integers(1, 3))
def test_catalog_mutated(world: World, data: st.DataObject, which: str, edits: int) -> None:
    with box(world) as where:
        docs = copy_catalogs(where)
        for _ in range(edits):
            mutate(data, docs[which], TOML_VALUES, KEYS)
        (where / which).write_text(toml_doc(docs[which]))
        cli(world, list_cmd(world, write_matrix(where, SMALL_MATRIX)), {0, 2, 3})


@fuzz(25)
@given(which=st.sampled_from(CATALOGS), at=st.floats(0, 1), raw=st.binary(max_size=30), cut=st.integers(0, 200))
def test_catalog_spliced(world: World, which: str, at: float, raw: bytes, cut: int) -> None:
    with box(world) as where:
        copy_catalogs(where)
        text = (where / which).read_bytes()
        i = int(at * len(text))
        (where / which).write_bytes(text[:i] + raw + text[i + cut :])
        cli(world, list_cmd(world, write_matrix(where, SMALL_MATRIX)), {0, 2, 3})


NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2**53 + 1, 2**63, 10**30, 10**300, 10**400, 10**4000]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, 5e-324, 1e-300, 0.0]),
)
MODEL_NUMBERS = [
    "params_total_b",
    "params_active_b",
    "context_length",
    "weight_bytes",
    "num_layers",
    "num_kv_heads",
    "head_dim",
    "sliding_window",
    "num_global_layers",
]


@fuzz(20)
@given(
    numbers=st.dictionaries(st.sampled_from(MODEL_NUMBERS), NUMBERS, min_size=1, max_size=3),
    memory=st.none() | NUMBERS,
    settings_=st.dictionaries(
        st.sampled_from(["kv_reserve_tokens", "gpu_memory_utilization", "overhead_gib"]), NUMBERS, max_size=2
    ),
)
def test_catalog_numbers_run(world: World, numbers: dict[str, Any], memory: Any, settings_: dict[str, Any]) -> None:
    """Huge, tiny and zero sizes in a catalog beside the matrix, through ``run`` (the fit probe computes with them)."""
    with box(world) as where:
        docs = copy_catalogs(where)
        for m in docs["models.toml"]["model"]:
            if m["id"] == "google/gemma-4-E4B-it":
                m.update(numbers)
        if memory is not None:
            docs["gpus.toml"]["gpu"][0]["memory_gib"] = memory
        for name in ("models.toml", "gpus.toml"):
            (where / name).write_text(toml_doc(docs[name]))
        matrix = small_matrix()
        matrix["settings"].update(settings_)
        reports = where / "reports"
        argv = ["run", "--quiet", "--matrix", str(write_matrix(where, matrix)), *world.net(reports), "-k", "e4b"]
        cli(world, argv, {0, 2, 3}, [reports])


# --- (3) policies and (4) candidate specs -----------------------------------------------------------------------------


def base_policy() -> dict[str, Any]:
    return {
        "name": "edge",
        "description": "fuzz",
        "current": "vllm=0.19.0",
        "fail_on": "unmet",
        "targets": {"l4x1": {"gpu": "L4", "count": 1, "tp": 1}},
        "require": [
            {"model": "google/gemma-4-E4B-it", "target": "l4x1", "min": "predicted", "note": "one L4"},
            {"model": "gemma-4-31B-it", "target": "h100x1", "min": "override"},
        ],
    }


SPECS = st.one_of(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(["triton", "vllm", "transformers", "kind", "Triton", " vllm", ""]), TEXT),
            st.sampled_from(["=", "==", "", " = ", ":"]),
            st.one_of(VERSIONS, RELEASES, KINDS),
        ),
        max_size=4,
    ).map(lambda parts: ",".join(k + s + v for k, s, v in parts)),
    st.sampled_from(
        [
            "vllm=0.19.0",
            "vllm=0.20.0,transformers=5.6.0",
            "triton=26.03",
            "triton=26.03,vllm=0.20.0",
            "triton=24.10,kind=triton-python",
            "kind=triton-python",
            "triton=26.03,kind=triton-python,vllm=0.19.0",
            ",,,",
            "vllm=0.19.0,vllm=0.20.0",
            "=",
            "vllm=",
        ]
    ),
    TEXT,
)


def policy_argv(world: World, policy: Path, candidate: str, reports: Path) -> list[str]:
    return [
        "gate",
        "--policy",
        str(policy),
        f"--candidate={candidate}",
        "--matrix",
        str(world.matrix),
        *world.net(reports),
    ]


@fuzz(35)
@given(data=st.data(), edits=st.integers(1, 3))
def test_policy_mutated(world: World, data: st.DataObject, edits: int) -> None:
    doc = base_policy()
    values = st.one_of(TOML_VALUES, SPECS, TARGETS, MODELS)
    for _ in range(edits):
        mutate(data, doc, values, KEYS)
    with box(world) as where:
        (where / "p.toml").write_text(toml_doc(doc))
        reports = where / "reports"
        cli(world, policy_argv(world, where / "p.toml", "vllm=0.19.0", reports), {0, 1, 2, 3}, [reports])


@fuzz(25)
@given(raw=st.binary(min_size=1, max_size=30), at=st.floats(0, 1), cut=st.integers(0, 30))
def test_policy_spliced(world: World, raw: bytes, at: float, cut: int) -> None:
    text = toml_doc(base_policy()).encode()
    i = int(at * len(text))
    with box(world) as where:
        (where / "p.toml").write_bytes(text[:i] + raw + text[i + cut :])
        reports = where / "reports"
        cli(world, policy_argv(world, where / "p.toml", "vllm=0.19.0", reports), {0, 1, 2, 3}, [reports])


@fuzz(35)
@given(candidate=SPECS, current=st.none() | SPECS)
@example(candidate="--", current=None)
def test_gate_candidate(world: World, candidate: str, current: str | None) -> None:
    doc = base_policy()
    if current is None:
        del doc["current"]
    else:
        doc["current"] = current
    with box(world) as where:
        (where / "p.toml").write_text(toml_doc(doc))
        reports = where / "reports"
        cli(world, policy_argv(world, where / "p.toml", candidate, reports), {0, 1, 2, 3}, [reports])


ARGV_ODD = st.sampled_from(["\udcff", "a\udcfe", "\udc80/..", "\x00", "-", "--", "-x", "--gpu"])
FLAG_VALUES = {
    "--model": st.one_of(MODELS, ARGV_ODD),
    "--vllm": st.one_of(VERSIONS, ARGV_ODD),
    "--transformers": VERSIONS,
    "--triton": st.one_of(RELEASES, ARGV_ODD),
    "--kind": KINDS,
    "--gpu": st.one_of(TARGETS, ARGV_ODD),
}


@fuzz(50)
@given(
    flags=st.dictionaries(st.sampled_from(list(FLAG_VALUES)), st.just(""), max_size=6),
    data=st.data(),
    joined=st.booleans(),
)
def test_check_flags(world: World, flags: dict[str, str], data: st.DataObject, joined: bool) -> None:
    argv = ["check", "--matrix", str(world.matrix), *world.net()]
    if "--model" not in flags:
        argv += ["--model", "gemma-4-E4B-it"]
    for flag in flags:
        value = data.draw(FLAG_VALUES[flag], label=flag)
        argv += [f"{flag}={value}"] if joined else [flag, value]
    cli(world, argv, {0, 2, 3})


# --- (5) -k, --only, --shard through ``list`` -------------------------------------------------------------------------

WORDS = st.one_of(
    st.sampled_from(
        ["vllm", "e4b", "31b", "l4x1", "h100x1", "tf5.6.0", "vllm-0.19.0", "gemma", "__", "-", ".", "x", "E4B"]
    ),
    st.from_regex(r"[a-z0-9._+-]{1,12}", fullmatch=True).filter(lambda w: w not in ("and", "or", "not")),
)
K_TOKENS = st.one_of(st.sampled_from(["and", "or", "not", "(", ")", "AND", "Not", "()", "(not", "or)"]), WORDS, TEXT)


def listed(world: World, *extra: str, allowed: Collection[int] = (0, 2, 3)) -> Outcome:
    return cli(world, list_cmd(world, world.matrix, *extra), allowed)


@fuzz(60)
@given(tokens=st.lists(K_TOKENS, max_size=12), sep=st.sampled_from([" ", "", "  ", "\t"]))
def test_keyword_random(world: World, tokens: list[str], sep: str) -> None:
    listed(world, f"-k={sep.join(tokens)}")


@fuzz(25)
@given(depth=st.integers(1, 400), word=WORDS, nots=st.booleans())
@example(depth=63, word="e4b", nots=False)
@example(depth=64, word="e4b", nots=False)
@example(depth=5000, word="e4b", nots=True)
def test_keyword_deep(world: World, depth: int, word: str, nots: bool) -> None:
    """Nesting up to the limit selects (0 or 3); deeper is refused as bad input (2), never a RecursionError."""
    expr = "not " * depth + word if nots else "(" * depth + word + ")" * depth
    listed(world, f"-k={expr}", allowed={0, 3} if depth <= 60 else {2} if depth > 70 else {0, 2, 3})


@fuzz(15)
@given(some=st.lists(WORDS, min_size=1, max_size=4), n=st.integers(1, 3000), op=st.sampled_from(["or", "and"]))
@example(some=["zzz", "e4b"], n=3000, op="or")
def test_keyword_long_chain(world: World, some: list[str], n: int, op: str) -> None:
    """A long flat chain is one valid expression: the selection is exactly the ids it names."""
    words = (some * n)[:n]
    o = listed(world, "-k=" + f" {op} ".join(words), allowed={0, 3})
    pick = any if op == "or" else all
    expected = [i for i in world.cell_ids if pick(w.lower() in i.lower() for w in words)]
    assert o.out.split() == expected
    assert (o.code == 3) == (not expected)


GLOBS = st.one_of(
    st.sampled_from(["*", "vllm-*", "*e4b*", "[", "[!", "[]", "[!]", "**", "?", "*[a-z]*", "\\", "*__*__l4x1", ""]),
    st.from_regex(r"[a-z0-9*?\[\]!._-]{0,16}", fullmatch=True),
    TEXT,
)


@fuzz(40)
@given(globs=st.lists(GLOBS, min_size=1, max_size=3))
def test_only_globs(world: World, globs: list[str]) -> None:
    listed(world, *[f"--only={g}" for g in globs], allowed={0, 3})


SHARDS = st.one_of(
    st.builds(lambda i, n: f"{i}/{n}", st.integers(-2, 10**7), st.integers(-2, 10**7)),
    st.sampled_from(["", " ", "1/1", "0/0", "1/0", "2/1", "1/", "/1", "1//2", "1/2/3", " 1/2 ", "\u0661/\u0662"]),
    st.sampled_from(["999999/999999", "1000000/1000000", "1" * 5000 + "/2", "01/02", "+1/2", "1.0/2"]),
    TEXT,
)


@fuzz(40)
@given(shard=SHARDS)
@example(shard="--")  # argparse hands `--shard=--` over as [], not "--"
def test_shard_strings(world: World, shard: str) -> None:
    listed(world, f"--shard={shard}")


@fuzz(6)
@given(n=st.integers(1, 20))
def test_shards_partition_the_selection(world: World, n: int) -> None:
    seen: list[str] = []
    for i in range(1, n + 1):
        seen += listed(world, "--shard", f"{i}/{n}", allowed={0, 3}).out.split()
    assert sorted(seen) == world.cell_ids


# --- (6) version strings wherever they enter ----------------------------------------------------------------------


@fuzz(40)
@given(
    version=VERSIONS,
    where=st.sampled_from(
        ["matrix-vllm", "matrix-tf", "range-from", "range-to", "check-vllm", "check-tf", "candidate", "current"]
    ),
)
def test_versions_everywhere(world: World, version: str, where: str) -> None:
    with box(world) as folder:
        reports = folder / "reports"
        doc = small_matrix()
        if where.startswith(("matrix", "range")):
            rule = doc["stack"][0]
            if where == "matrix-vllm":
                rule["vllm"] = [version]
            elif where == "matrix-tf":
                rule["transformers"] = [version]
            else:
                rule["vllm"] = {"from": version} if where == "range-from" else {"from": "0.19.0", "to": version}
            argv = list_cmd(world, write_matrix(folder, doc))
            allowed: set[int] = {0, 2, 3}
        elif where.startswith("check"):
            flag = "--vllm" if where == "check-vllm" else "--transformers"
            argv = ["check", "--matrix", str(world.matrix), *world.net(), "--model=gemma-4-E4B-it", f"{flag}={version}"]
            allowed = {0, 2, 3}
        else:
            doc_p = base_policy()
            if where == "current":
                doc_p["current"] = f"vllm={version}"
            (folder / "p.toml").write_text(toml_doc(doc_p))
            candidate = f"vllm={version}" if where == "candidate" else "vllm=0.20.0"
            argv = policy_argv(world, folder / "p.toml", candidate, reports)
            allowed = {0, 1, 2, 3}
        cli(world, argv, allowed, [reports])


# --- (7) run refs over a store with two real runs ------------------------------------------------------------------

# Templates: <R0>/<R1> a stored run id, <P0> a prefix of one, <STORE> the store, <CWD> the working directory.
REF_TEMPLATES = [
    "<R0>",
    "<R1>",
    "<P0>",
    "<STORE>/runs/<R0>",
    "<STORE>/runs/<R1>/",
    "<STORE>/runs/<R0>/cells",
    "<STORE>/runs/<R0>/run.json",
    "<STORE>/runs/<R0>/../<R1>",
    "<STORE>/runs/../runs/<R0>",
    "<STORE>",
    "<STORE>/runs",
    "../store/runs/<R0>",
    "../store",
    "<R0>/..",
    "<R0>/../<R1>",
    "../<R0>",
    "runs/<R0>",
    "<CWD>",
    ".",
    "..",
    "/",
    "",
    " ",
    "/etc",
    "/etc/passwd",
    "/dev/null",
    "/proc/self",
    "~",
    "2026",
    "2",
    "-",
    "\x00",
    "<R0>\x00",
    "<R0>\udcff",
    "\udcff\udcfe",
    "\u00e9",
    "<R0>*",
    "%",
    "_",
    "[",
]
REFS = st.one_of(
    st.sampled_from(REF_TEMPLATES), TEXT, HOSTILE, st.builds(lambda a, b: a + b, st.sampled_from(REF_TEMPLATES), TEXT)
)


def expand_ref(world: World, ref: str) -> str:
    return (
        ref.replace("<R0>", world.run_ids[0])
        .replace("<R1>", world.run_ids[1])
        .replace("<P0>", world.run_ids[0][:8])
        .replace("<STORE>", str(world.store))
        .replace("<CWD>", str(world.cwd))
    )


def stored(world: World) -> list[str]:
    return ["--reports-dir", str(world.store)]


@fuzz(10)
@given(baseline=REFS)
def test_gate_baseline(world: World, baseline: str) -> None:
    with box(world) as where:
        (where / "p.toml").write_text(toml_doc(base_policy()))
        reports = where / "reports"
        argv = [
            *policy_argv(world, where / "p.toml", "vllm=0.20.0", reports),
            f"--baseline={expand_ref(world, baseline)}",
        ]
        cli(world, argv, {0, 1, 2, 3}, [reports])


@fuzz(15)
@given(model=st.one_of(HOSTILE, ARGV_ODD), transformers=st.none() | VERSIONS)
def test_tiny_build_refuses(world: World, model: str, transformers: str | None) -> None:
    """``tiny build`` of a model the catalog does not hold: exit 2 before anything is built."""
    argv = ["tiny", "build", f"--matrix={world.matrix}", *world.net(), "--", model]
    if transformers is not None:
        argv[3:3] = [f"--transformers={transformers}"]
    cli(world, argv, {2})


@fuzz(40)
@given(
    ref=st.none() | REFS,
    fmt=st.sampled_from(["txt", "md", "csv", "json", "junit", "txt,md", "bogus", "", ",", "TXT"]),
    keyword=st.none() | st.lists(K_TOKENS, max_size=5).map(" ".join),
    only=st.lists(GLOBS, max_size=2),
)
@example(ref=None, fmt="txt", keyword="--", only=[])
def test_report_ref(world: World, ref: str | None, fmt: str, keyword: str | None, only: list[str]) -> None:
    with box(world) as where:
        argv = ["report", *stored(world), f"--format={fmt}", "--out", str(where / "out")]
        argv += ([f"-k={keyword}"] if keyword is not None else []) + [f"--only={g}" for g in only]
        if ref is not None:
            argv.append("--")
            argv.append(expand_ref(world, ref))
        cli(world, argv, {0, 2, 3}, [world.store, where / "out"])


@fuzz(40)
@given(refs=st.lists(REFS, max_size=3), fmt=st.sampled_from(["text", "md", "json"]))
def test_diff_refs(world: World, refs: list[str], fmt: str) -> None:
    argv = ["diff", *stored(world), "--format", fmt, "--", *[expand_ref(world, r) for r in refs]]
    cli(world, argv, {0, 2, 3}, [world.store])


@fuzz(40)
@given(
    keyword=REFS,
    only=st.lists(st.one_of(REFS, GLOBS), max_size=2),
    last=st.one_of(st.integers(-2, 10**6).map(str), TEXT),
)
def test_history_refs(world: World, keyword: str, only: list[str], last: str) -> None:
    argv = ["history", *stored(world), f"-k={expand_ref(world, keyword)}", f"--last={last}"]
    argv += [f"--only={expand_ref(world, g)}" for g in only]
    cli(world, argv, {0, 2, 3}, [world.store])


EXIT_STATUS = st.one_of(
    st.builds(
        lambda key, sep, code: key + sep + code,
        REFS,
        st.sampled_from(["=", "==", "", "=="]),
        st.one_of(st.integers(-300, 300).map(str), st.sampled_from(["", "x", "1e3", "0x10", " 1", "\u0661"]), TEXT),
    ),
    TEXT,
)


@fuzz(40)
@given(dirs=st.lists(REFS, min_size=1, max_size=3), statuses=st.lists(EXIT_STATUS, max_size=2))
def test_merge_refs(world: World, dirs: list[str], statuses: list[str]) -> None:
    with box(world) as where:
        reports = where / "reports"
        argv = ["merge", "--reports-dir", str(reports), *[f"--exit-status={expand_ref(world, s)}" for s in statuses]]
        argv += ["--", *[expand_ref(world, d) for d in dirs]]
        cli(world, argv, {0, 2, 3}, [reports])


# --- (8) planted run directories ---------------------------------------------------------------------------------

RUN_ID_VALUES: st.SearchStrategy[Any] = st.one_of(
    HOSTILE,
    TEXT,
    st.sampled_from(["<R0>", "<R1>", "<P0>", "20990101T000000.000000Z-abcdef", "../runs/<R0>", "<R0>/../../x"]),
    st.none(),
    st.integers(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(TEXT, st.integers(), max_size=2),
)
PLAN_IDS = st.one_of(
    st.sampled_from(["../../x__a__b", "a__b__c", "a/b__c__d", "..__..__..", "a__b__c/../../../y", "x" * 70 + "__a__b"]),
    HOSTILE,
    st.builds(lambda a, b, c: f"{a}__{b}__{c}", IDS, IDS, IDS),
)


def _resolve_ids(world: World, value: Any) -> Any:
    return expand_ref(world, value) if isinstance(value, str) else value


@fuzz(20)
@given(
    run_id=RUN_ID_VALUES,
    dirname=st.one_of(st.sampled_from(["<R0>", "planted", "20990101T000000.000000Z-abcdef"]), IDS),
    in_store=st.booleans(),
    plan_ids=st.lists(PLAN_IDS, max_size=2),
    command=st.sampled_from(["report", "diff", "merge", "history", "merge-two"]),
)
def test_planted_run(
    world: World, run_id: Any, dirname: str, in_store: bool, plan_ids: list[str], command: str
) -> None:
    """A copy of a real run whose run.json names a hostile run id, and whose plan names hostile cell ids."""
    with box(world) as where:
        reports = where / "reports"
        parent = reports / "runs" if in_store else where / "planted"
        name = expand_ref(world, dirname)
        planted = Path(os.path.normpath(parent / name))
        if "\x00" in name or planted.parent != parent or planted.exists():
            planted = parent / "planted"
        shutil.copytree(world.store / "runs" / world.run_ids[0], planted)
        meta = json.loads((planted / "run.json").read_text())
        meta["run_id"] = _resolve_ids(world, run_id)
        (planted / "run.json").write_text(json.dumps(meta))
        if plan_ids:
            plan = json.loads((planted / "plan.json").read_text())
            for cell in plan_ids:
                plan["cells"].append(cell)
                plan["selection"][cell] = {"vllm": "0.19.0"}
            (planted / "plan.json").write_text(json.dumps(plan))
        real = str(world.store / "runs" / world.run_ids[1])
        argv = {
            "report": ["report", str(planted), "--format", "txt"],
            "diff": ["diff", str(planted), real],
            "merge": ["merge", str(planted)],
            "merge-two": ["merge", str(planted), real],
            "history": ["history"],
        }[command]
        cli(world, [*argv, "--reports-dir", str(reports)], {0, 2, 3}, [reports])


JSON: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, HOSTILE),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
CELL_EDITS = st.one_of(
    st.tuples(st.just("evidence.observed"), JSON),  # what the observed versions are read from
    st.tuples(st.just("evidence.python"), JSON),
    st.tuples(st.just("declared"), st.dictionaries(st.sampled_from(["kind", "vllm", "model", "target", "x"]), JSON)),
    st.tuples(st.just("random"), JSON),
)


@fuzz(20)
@given(
    data=st.data(),
    edit=CELL_EDITS,
    probe=st.sampled_from(["env", "import", "backend-imports", "serve", "fit"]),
    command=st.sampled_from(["report", "report-full", "history", "diff", "merge"]),
)
def test_planted_cell(world: World, data: st.DataObject, edit: tuple[str, Any], probe: str, command: str) -> None:
    """A stored run whose cell record was edited by hand (or damaged): exit 2 naming it, or rendered; never a
    crash."""
    with box(world) as where:
        reports = where / "reports"
        run = reports / "runs" / world.run_ids[0]
        shutil.copytree(world.store / "runs" / world.run_ids[0], run)
        at = data.draw(st.integers(0, 11), label="cell")
        cell = record_at(run, at)
        what, value = edit
        if what == "declared":
            cell["declared"] = value
        elif what == "random":
            mutate(data, cell, JSON, TEXT)
        else:
            cell["probes"].append(
                {"name": probe, "status": "pass", "reason": None, "detail": "", "evidence": {what[9:]: value}}
            )
        replace_record(run, at, cell)
        other = str(world.store / "runs" / world.run_ids[1])
        argv = {
            "report": ["report", world.run_ids[0], "--format", "txt,md,csv,json"],
            "report-full": ["report", world.run_ids[0], "--format", "junit,tex,html"],
            "history": ["history", "--format", "json"],
            "diff": ["diff", other, world.run_ids[0]],
            "merge": ["merge", str(run), other],
        }[command]
        cli(world, [*argv, "--reports-dir", str(reports)], {0, 2, 3}, [reports])


TITLES = st.one_of(
    TEXT,
    st.sampled_from(["\\", "%", "$", "&", "#", "_", "{", "}", "~", "^", "<script>x</script>", "]]>", "\x1b[31m"]),
    st.sampled_from(["\udcff", "a\udcfe\udc80", "\x00", "\n\n", "\r", "\u2028", "\ufeff", "x" * 5000]),
)


@fuzz(30)
@given(title=TITLES, fmt=st.sampled_from(["txt", "md", "csv", "json", "junit", "tex", "html"]))
@example(title="\udcff", fmt="md")  # `--title $'\xff'`: the byte arrives as a lone surrogate
@example(title="\x1f", fmt="tex")  # an ASCII control character
def test_report_title(world: World, title: str, fmt: str) -> None:
    """``--title`` (argv: an invalid UTF-8 byte arrives as a lone surrogate) in every text format."""
    with box(world) as where:
        argv = ["report", world.run_ids[0], *stored(world), f"--title={title}", f"--format={fmt}"]
        cli(world, [*argv, "--out", str(where / "out")], {0, 2, 3}, [world.store, where / "out"])


OUT_PATHS = st.sampled_from(
    [
        "<BOX>/o",
        "<BOX>/a/b/c/o",
        "<BOX>/file/child",
        "<BOX>/file",
        "<BOX>/dir",
        "<BOX>/dir/",
        "<BOX>/" + "a" * 300,
        "<BOX>/\udcff",
        "<BOX>/o\n",
        "<BOX>/..",
        "<BOX>/.",
        "<BOX>/link-to-file",
        "<BOX>/link-to-dir",
        "<BOX>/dangling",
        "<BOX>/loop",
        "<BOX>/fifo",
        "",
        ".",
        "..",
    ]
)


@fuzz(25)
@given(path=OUT_PATHS, command=st.sampled_from(["diff --output", "gate --summary", "report --out"]))
def test_output_paths(world: World, path: str, command: str) -> None:
    """A file or folder the user names for output: written there, or exit 2/4 naming the flag; nothing elsewhere."""
    if command == "report --out" and path in ("", ".", "..", "<BOX>/.."):
        return  # the working directory, or a parent, is a legitimate output folder
    with box(world) as where:
        (where / "file").write_text("x")
        (where / "dir").mkdir()
        (where / "link-to-file").symlink_to(where / "file")
        (where / "link-to-dir").symlink_to(where / "dir")
        (where / "dangling").symlink_to(where / "missing")
        (where / "loop").symlink_to(where / "loop")
        os.mkfifo(where / "fifo")
        target = path.replace("<BOX>", str(where))
        reports = where / "reports"
        if command == "diff --output":
            argv = ["diff", world.run_ids[0], world.run_ids[1], *stored(world), f"--output={target}"]
        elif command == "report --out":
            argv = ["report", world.run_ids[0], *stored(world), "--format=txt", f"--out={target}"]
        else:
            (where / "p.toml").write_text(toml_doc(base_policy()))
            argv = [*policy_argv(world, where / "p.toml", "vllm=0.20.0", reports), f"--summary={target}"]
        cli(world, argv, {0, 1, 2, 4}, [world.store, where])


NUMBER_TEXT = st.one_of(
    st.sampled_from(
        [
            *["0", "1", "8", "256", "257", "-1", "0.1", "0.09", "600", "600.0001", "nan", "inf", "-inf", "1e309"],
            *["1e-309", "0x10", "1_0", " 8 ", "\u0668", "9" * 5000, "", "   ", "8\n", "\x00"],
        ]
    ),
    st.integers(-(10**6), 10**6).map(str),
    st.floats().map(str),
    TEXT,
)
TEMPLATE_PIECES = ["{release}", "{variant}", "{", "}", "{release.x}", "{release[0]}", "{release[x]}", "{0}", "{}"]
TEMPLATE_PIECES += ["{release!r}", "{release!z}", "{release:>10}", "{release:d}", "{variant.__class__}", ":", "/", "a"]
PATH_TEXT = st.one_of(
    st.sampled_from(["<BOX>", "<BOX>/missing", "<BOX>/file", "", " ", "\x00", "~", "~nobody/x", "~no-such-user/x"]),
    st.sampled_from(["\udcff", "\n", "<BOX>/\udcff"]),
    TEXT,
)
URLS = [
    *["<URL>", "<URL>/", "<URL>?token=a", "http://127.0.0.1:1/simple", "ftp://x/simple", "http://", "http://[::1"],
    *["http://h:99999", "http://h:0", "http://h:-1", "https://u:p w@h/simple", "http://\u00e9.invalid/x", ""],
]
OPTION_VALUES: dict[str, st.SearchStrategy[str]] = {
    "--jobs": NUMBER_TEXT,
    "--connect-timeout": NUMBER_TEXT,
    "--read-timeout": NUMBER_TEXT,
    "--index-ttl": NUMBER_TEXT,
    "--base-python": st.one_of(st.sampled_from(["3.11", "3.9", "3.100", "3", "3.11 ", "\u0663.11", "3.1\n"]), TEXT),
    "--triton-image": st.one_of(
        st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=5).map("".join),
        st.sampled_from(["nvcr.io/nvidia/tritonserver:{release}-{variant}", "{release}", "{variant}", "\n{release}"]),
        TEXT,
    ),
    "--device": st.one_of(st.sampled_from(["cpu", "gpu", "GPU", " cpu", ""]), TEXT),
    "--runner": st.one_of(st.sampled_from(["venv", "docker", "slurm", ""]), TEXT),
    "--base-image": TEXT,
    "--torch-index": st.one_of(st.sampled_from(["", "http://127.0.0.1:1/whl", "ftp://x", "http://"]), TEXT),
    "--find-links": PATH_TEXT,
    "--torch-find-links": PATH_TEXT,
    "--weights-dir": PATH_TEXT,
    "--reports-dir": PATH_TEXT,
    "--offline": st.one_of(st.sampled_from(["1", "true", "YES", "on", "0", "off", "", "maybe", " 1 "]), TEXT),
    "--index-url": st.one_of(st.sampled_from(URLS), TEXT),
    "--cache-dir": PATH_TEXT,
}
# Options that may take the command off the mirror or the warm cache: it then runs offline, and an index it
# has nothing cached for is unavailable (exit 4), never waited on.
MAY_BE_OFFLINE = {"--offline", "--index-url", "--cache-dir"}


OPTION_PAIRS = st.sampled_from(sorted(OPTION_VALUES)).flatmap(lambda o: st.tuples(st.just(o), OPTION_VALUES[o]))


@fuzz(60)
@given(pair=OPTION_PAIRS, via_env=st.booleans())
@example(pair=("--triton-image", "{release.x}"), via_env=False)
@example(pair=("--triton-image", "{release[x]}"), via_env=True)
@example(pair=("--cache-dir", "~no-such-user/x"), via_env=False)
@example(pair=("--reports-dir", "~no-such-user/x"), via_env=True)
@example(pair=("--find-links", "~no-such-user"), via_env=False)
def test_options(world: World, pair: tuple[str, str], via_env: bool) -> None:
    """Every common option, from its flag or its environment variable, through ``list``."""
    from stackmatrix.options import OPTIONS

    option, value = pair
    use_env = via_env and "\x00" not in value  # an environment variable cannot hold a NUL
    with box(world) as where:
        (where / "file").write_text("x")
        value = value.replace("<BOX>", str(where)).replace("<URL>", world.index_url)
        given = {"--cache-dir": str(world.cache), "--index-url": world.index_url, "--reports-dir": str(where / "r")}
        env: dict[str, str] = {}
        if use_env:
            env[OPTIONS[option[2:].replace("-", "_")].env] = value
            given.pop(option, None)  # a flag would win over the variable
        elif option in given:
            given[option] = value
        argv = ["list", "--matrix", str(world.matrix), *[f"{k}={v}" for k, v in given.items()]]
        if option in MAY_BE_OFFLINE and not (option == "--offline" and use_env):
            argv.append("--offline")
        elif not use_env:
            argv.append(f"{option}={value}")
        with pytest.MonkeyPatch.context() as mp:
            for name, text in env.items():
                mp.setenv(name, text)
            cli(world, argv, {0, 2, 3, 4} if option in MAY_BE_OFFLINE else {0, 2, 3}, [where])


META_KEYS = ["exit_code", "status", "started", "finished", "purpose", "tier", "matrix_hash", "cells_selected"]


@fuzz(25)
@given(
    edits=st.dictionaries(st.sampled_from(META_KEYS), JSON, min_size=1, max_size=2),
    which=st.integers(0, 1),
    drop_cell=st.booleans(),
    shard=st.none() | SHARDS,
    command=st.sampled_from(["history", "diff", "report", "merge", "merge-one", "merge-status"]),
)
@example(edits={"exit_code": []}, which=0, drop_cell=False, shard=None, command="history")
@example(edits={"exit_code": []}, which=0, drop_cell=True, shard=None, command="merge-one")
def test_planted_run_meta(
    world: World, edits: dict[str, Any], which: int, drop_cell: bool, shard: str | None, command: str
) -> None:
    """Stored runs whose run.json fields (exit code, status, times, purpose) or plan shard were edited by hand, one
    of them missing a cell file: a merge names the missing cell from what the shard recorded."""
    with box(world) as where:
        reports = where / "reports"
        runs = [reports / "runs" / r for r in world.run_ids]
        for src, dst in zip(world.run_ids, runs, strict=True):
            shutil.copytree(world.store / "runs" / src, dst)
        meta = json.loads((runs[which] / "run.json").read_text())
        meta.update(edits)
        (runs[which] / "run.json").write_text(json.dumps(meta))
        if drop_cell:
            drop_record(runs[which], 0)
        if shard is not None:
            plan = json.loads((runs[which] / "plan.json").read_text())
            plan["shard"] = shard
            (runs[which] / "plan.json").write_text(json.dumps(plan))
        argv = {
            "history": ["history"],
            "diff": ["diff", *world.run_ids],
            "report": ["report", world.run_ids[which], "--format=txt,json"],
            "merge": ["merge", *map(str, runs)],
            "merge-one": ["merge", str(runs[which])],
            "merge-status": ["merge", *map(str, runs), f"--exit-status={world.run_ids[which]}=137"],
        }[command]
        cli(world, [*argv, "--reports-dir", str(reports)], {0, 2, 3}, [reports])


@fuzz(20)
@given(cert=PATH_TEXT.filter(lambda v: v != "<BOX>/file"))
@example(cert="~no-such-user/ca.pem")
def test_cert_paths(world: World, cert: str) -> None:
    """``stage --cert``: a path that is not a regular file is a usage error (2) before anything is fetched."""
    with box(world) as where:
        argv = ["stage", f"--matrix={world.matrix}", *world.net(), f"--cert={cert.replace('<BOX>', str(where))}"]
        cli(world, argv, {2})


# --- what the fuzzing found, as plain regressions (each also reachable from a property above) ------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--model=--"],
        ["check", "--model=gemma-4-E4B-it", "--gpu=--"],
        ["check", "--model=gemma-4-E4B-it", "--vllm=--"],
        ["list", "--shard=--"],
    ],
    ids=["check-model", "check-gpu", "check-vllm", "list-shard"],
)
def test_found_option_value_double_dash(world: World, argv: list[str]) -> None:
    """``--flag=--``: argparse drops the ``--`` and hands the command an empty list instead of a string."""
    cli(world, [*argv, f"--matrix={world.matrix}", *world.net()], {2})


@pytest.mark.parametrize(
    ("argv", "env", "allowed"),
    [
        (["list", "--matrix=<BOX>/big.toml", "<NET>"], {}, {2}),
        (["list", "--matrix=<M>", "<NET>", "--triton-image={release.x}"], {}, {2}),
        (["list", "--matrix=<M>", "<NET>"], {"STACKMATRIX_TRITON_IMAGE": "r/t:{release[x]}"}, {2}),
        (["list", "--matrix=<M>", "--offline", "--cache-dir=~no-such-user/x"], {}, {2}),
        (["list", "--matrix=<M>", "<NET>", "--find-links=~no-such-user"], {}, {2}),
        (["list", "--matrix=<M>", "--cache-dir=<CACHE>"], {"STACKMATRIX_REPORTS_DIR": "~no-such-user/r"}, {2}),
        (["stage", "--matrix=<M>", "<NET>", "--cert=~no-such-user/ca.pem"], {}, {2}),
        (["report", "<R0>", "--reports-dir=<STORE>", "--out=<BOX>/o", "--format=md", "--title=\udcff"], {}, {0, 2}),
        (["report", "<R0>", "--reports-dir=<STORE>", "--out=<BOX>/o", "--format=tex", "--title=\x1f"], {}, {0, 2}),
    ],
    ids=[
        "toml-int-4301-digits",
        "triton-image-attribute",
        "triton-image-index-env",
        "cache-dir-unknown-user",
        "find-links-unknown-user",
        "reports-dir-unknown-user-env",
        "cert-unknown-user",
        "title-lone-surrogate",
        "title-control-char-tex",
    ],
)
def test_found_inputs(world: World, argv: list[str], env: dict[str, str], allowed: set[int]) -> None:
    """Single inputs the properties above found crashing ``main`` (an internal error, or an exception escaping it)."""
    with box(world) as where, pytest.MonkeyPatch.context() as mp:
        (where / "big.toml").write_text("a = " + "1" * 4301 + "\n")
        for name, value in env.items():
            mp.setenv(name, value)
        subst = {"<BOX>": str(where), "<M>": str(world.matrix), "<CACHE>": str(world.cache)}
        subst |= {"<R0>": world.run_ids[0], "<STORE>": str(world.store)}
        out: list[str] = []
        for arg in argv:
            if arg == "<NET>":
                out += world.net(where / "reports")
                continue
            for key, value in subst.items():
                arg = arg.replace(key, value)
            out.append(arg)
        cli(world, out, allowed, [where, world.store])


@pytest.mark.parametrize(
    ("drop_cell", "command"),
    [(False, ["history"]), (False, ["diff"]), (True, ["merge", "<RUN>"])],
    ids=["history", "diff", "merge-missing-cell"],
)
def test_found_run_json_exit_code_list(world: World, drop_cell: bool, command: list[str]) -> None:
    """A run.json whose exit_code is a list: history and diff leave the run out or name it (not exit 4 from the
    index), and a merge naming a missing cell from it does not crash."""
    with box(world) as where:
        reports = where / "reports"
        runs = [reports / "runs" / r for r in world.run_ids]
        for src, dst in zip(world.run_ids, runs, strict=True):
            shutil.copytree(world.store / "runs" / src, dst)
        meta = json.loads((runs[0] / "run.json").read_text())
        meta["exit_code"] = []
        (runs[0] / "run.json").write_text(json.dumps(meta))
        if drop_cell:
            drop_record(runs[0], 0)
        argv = [a.replace("<RUN>", str(runs[0])) for a in command]
        cli(world, [*argv, "--reports-dir", str(reports)], {0, 2, 3}, [reports])


def _copied_run(world: World, where: Path) -> tuple[Path, Path]:
    reports = where / "reports"
    run = reports / "runs" / world.run_ids[0]
    shutil.copytree(world.store / "runs" / world.run_ids[0], run)
    return reports, run


@pytest.mark.parametrize(
    "command", [["report", "--format=txt,md"], ["history"], ["diff"]], ids=["report", "history", "diff"]
)
@pytest.mark.parametrize(
    "edit",
    [
        {"declared": {}},  # every key is optional to the reader; the table then holds NaN where names go
        {"probes+": {"name": "env", "status": "pass", "evidence": {"observed": True}}},
        {"probes+": {"name": "env", "status": "pass", "evidence": {"observed": ["vllm", "0.19.0"]}}},
    ],
    ids=["declared-empty", "observed-bool", "observed-list"],
)
def test_found_hand_edited_cell(world: World, edit: dict[str, Any], command: list[str]) -> None:
    """A stored cell record that the reader accepts must render (0) or be named as damaged (2), never crash."""
    with box(world) as where:
        reports, run = _copied_run(world, where)
        cell = record_at(run, 0)
        if "probes+" in edit:
            cell["probes"].append({"reason": None, "detail": "", **edit["probes+"]})
        else:
            cell.update(edit)
        replace_record(run, 0, cell)
        argv = [*command, world.run_ids[0]] if command[0] == "report" else command
        if command == ["diff"]:
            argv = ["diff", world.run_ids[0], str(world.store / "runs" / world.run_ids[1])]
        cli(world, [*argv, "--reports-dir", str(reports)], {0, 2, 3}, [reports])

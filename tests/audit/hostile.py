"""Hostile / broken-input audit of the ``stackmatrix`` CLI (stdlib only): ~900 hand-made cases, each run through
the CLI in a subprocess, judged on exit code, tracebacks, hangs, writes outside the store and leaked secrets.

Run from the repository root with an interpreter that has stackmatrix installed (as root: some cases mount tmpfs;
without root those cases are reported NOT-RUN, never PASS):

    python -m nox -s audit                                          # the whole corpus, in the nox session's venv
    python -m tests.audit.hostile                                   # the same with the current interpreter
    python -m tests.audit.hostile --only creds                      # one category
    python -m tests.audit.hostile --case 'ids/target-dotdot*' --show
    python -m tests.audit.hostile --json out.json                   # every result as JSON
    python -m tests.audit.hostile --list                            # case names and ideal exit codes only
    python -m tests.audit.hostile --workdir DIR                     # reuse DIR's fixtures and warm cache

It always tests the code the interpreter imports (``python -m stackmatrix``): the installed or working tree.
Everything is written under the work directory (default: a fresh ``stackmatrix-audit-*`` temporary directory,
kept afterwards and printed at the end): ``cache/`` (the warm cache, built once from the real package index and
hard-linked into each case), ``fixtures/`` (catalogs, stored runs, shards) and ``runs/<category>/<case>/``. Each
case runs in the sandbox ``runs/<category>/<case>/w/`` whose HOME, cwd, inputs, reports dir and cache dir all lie
inside it; ``runs/<category>/<case>/_h/`` holds its stdout, stderr, result.json and cmd.sh (reruns it). The
repository is only read.

Flags: TRACEBACK, CRASH (the tool's last-resort "internal error" handler fired), HANG (killed at the timeout),
ESCAPE (a file or dir appeared/changed/vanished in the sandbox outside the reports dir, the cache dir and the case's
declared outputs), SECRET (a planted secret in stdout/stderr or in a file written under the sandbox),
MULTILINE_ERR (exit 2/4 with more than 3 stderr lines), UNNAMED (exit 2 without naming what the case damaged: the
file, and for a run's journal the line), ORPHAN_RUN (a failing command left a run marked complete, a new one or one
it resumed), SLOW (over the case's time budget); TMP_LEFTOVER (files left in $TMPDIR) is informative only.
PASS = exit code in the case's ideal set and none of the failing flags. NOT-RUN = the case could not run here (e.g.
it needs root), with the reason.

Exit status: 0 when no case failed (NOT-RUN cases do not fail the audit), 1 when any case failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import socketserver
import sqlite3
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# stackmatrix.matrix.loaded.CATALOG_FILES: the audit drives the CLI only, it imports nothing of the tool
CATALOG_FILES = ("gpus.toml", "models.toml", "triton.toml", "cuda.toml")

REPO = Path(__file__).resolve().parents[2]  # the repository root: tests/audit/hostile.py
PY = sys.executable  # the interpreter under test: it must import stackmatrix
# Set by use_workdir() from --workdir (default: a fresh temporary directory).
WORK = Path()
WARM = Path()  # the warm cache (built once; hard-linked into each case)
FIX = Path()  # fixtures: catalogs, stored runs, shards
RUNS = Path()  # one sandbox per case
CODE_STATE = ""  # which code is under test (printed, stored with the fixtures and in the JSON)

SECRET_PW = "s3cr3tPW"
SECRET_TOKEN = "s3cr3tTOKEN"
SECRET_ENV = "s3cr3tENVTOKEN"
SECRET_FILE = "s3cr3tFILECONTENT"
SECRETS = [
    SECRET_PW,
    SECRET_TOKEN,
    SECRET_ENV,
    SECRET_FILE,
    base64.b64encode(f"user:{SECRET_PW}".encode()).decode().rstrip("="),  # a Basic auth header
]
ALWAYS_FAIL = {"TRACEBACK", "CRASH", "HANG", "ESCAPE", "SECRET", "MULTILINE_ERR", "UNNAMED", "ORPHAN_RUN", "SLOW"}
FLAG_NAMES = [
    "TRACEBACK",
    "CRASH",
    "HANG",
    "ESCAPE",
    "SECRET",
    "MULTILINE_ERR",
    "UNNAMED",
    "ORPHAN_RUN",
    "SLOW",
    "WRONG_EXIT",
    "TMP_LEFTOVER",
    "HARNESS_ERROR",
]
# the tool's last-resort handler: "stackmatrix: internal error: Type: msg; traceback in PATH" (exit 1)
CRASH_RE = re.compile(r"internal error: (?P<type>[\w.]+): (?P<msg>.*?)(?:; traceback in (?P<path>\S+))?$", re.M)
SMALL_K = "gemma-4-e4b-it__l4x1 and vllm-0.19"
DEFAULT_TIMEOUT = 60.0
MEM_LIMIT = 4 << 30
PRLIMIT = shutil.which("prlimit")

# subcommands that take the common options (--cache-dir etc.) vs. only --reports-dir
COMMON_CMDS = {"list", "run", "check", "stage", "tiny", "gate", "image", "collect", "worker", "advise", "bisect"}
REPORTS_ONLY = {"history", "diff", "report", "merge"}


# ---------------------------------------------------------------------------------------------------------------
# The case model
# ---------------------------------------------------------------------------------------------------------------
class NotRunError(Exception):
    """The case cannot run here (e.g. it mounts a tmpfs and this is not root): reported NOT-RUN with the reason."""


IS_ROOT = os.geteuid() == 0
NEEDS_ROOT = "needs root: mounts a tmpfs (read-only or full filesystem)"


@dataclass
class Ctx:
    case: Case
    box: Path  # <workdir>/runs/<cat>/<name>
    w: Path  # the watched sandbox
    R: Path  # reports dir
    C: Path  # cache dir
    IN: Path  # inputs
    OUT: Path  # allowed outputs
    HOME: Path
    CWD: Path
    mounts: list[Path] = field(default_factory=list)
    allowed: list[Path] = field(default_factory=list)

    def sub(self, s: str) -> str:
        for k, v in (
            ("@R@", self.R),
            ("@C@", self.C),
            ("@IN@", self.IN),
            ("@OUT@", self.OUT),
            ("@W@", self.w),
            ("@PORT@", SERVER_PORT[0]),
            ("@BH@", BLACKHOLE_PORT[0]),
            ("@BL@", BACKLOG_PORT[0]),
            ("@DRIP@", DRIP_PORT[0]),
            ("@REPO@", REPO),
        ):
            s = s.replace(k, str(v))
        return s

    def mount(self, path: Path, opts: str) -> None:
        if not IS_ROOT:
            raise NotRunError(NEEDS_ROOT)
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
        self.mounts.append(path)

    def remount_ro(self, path: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


@dataclass
class Case:
    cat: str
    name: str
    args: list[str]  # after "stackmatrix"; placeholders @R@ @C@ @IN@ @OUT@ @PORT@ ...
    ideal: frozenset[int]
    setup: Callable[[Ctx], object] | None = None
    cache: str = "warm"  # warm | empty | none (the setup makes it)
    reports: str | None = None  # fixture name copied into R, or None (R absent)
    auto_flags: bool = True  # append --cache-dir/--reports-dir per the subcommand
    timeout: float = DEFAULT_TIMEOUT
    max_s: float | None = None  # SLOW if exceeded (without timing out)
    env: dict[str, str] = field(default_factory=dict)
    allowed: list[str] = field(default_factory=list)  # extra writable paths (placeholders allowed)
    note: str = ""
    root: bool = False  # needs root (tmpfs mounts): NOT-RUN otherwise
    names: str = ""  # a regex an exit 2's stderr must match (the damaged file, the journal's line): else UNNAMED

    @property
    def id(self) -> str:
        return f"{self.cat}/{self.name}"


CASES: list[Case] = []
_NAMES: set[str] = set()


def add(cat: str, name: str, args: list[str], ideal: set[int] | int, **kw: Any) -> None:
    name = re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)[:80]
    base, i = name, 2
    while f"{cat}/{name}" in _NAMES:
        name, i = f"{base}~{i}", i + 1
    _NAMES.add(f"{cat}/{name}")
    CASES.append(Case(cat, name, list(args), frozenset({ideal} if isinstance(ideal, int) else ideal), **kw))


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: mini matrix, catalogs, policies, stored runs
# ---------------------------------------------------------------------------------------------------------------
def toml_str(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return out.replace("\x7f", "\\u007f")


def toml_val(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_val(x) for x in v) + "]"
    raise TypeError(v)


MINI_SETTINGS = {
    "python": '"3.12"',
    "platform": '"x86_64"',
    "kv_reserve_tokens": "8192",
    "gpu_memory_utilization": "0.90",
    "overhead_gib": "1.0",
}
MINI_STACK = '[[stack]]\nkind = "vllm"\nvllm = ["0.19.0"]\ntransformers = ["4.57.6"]\n'


def mini_matrix(
    target: str = "l4x1",
    settings: dict[str, str] | None = None,
    stack: str = MINI_STACK,
    include: str = '["google/gemma-4-E4B-it"]',
    target_body: str = 'gpu = "L4"\ncount = 1\ntp = 1\n',
) -> str:
    st = {**MINI_SETTINGS, **(settings or {})}
    lines = ["[settings]"] + [f"{k} = {v}" for k, v in st.items() if v is not None]
    lines += ["", f"[targets.{toml_str(target)}]", target_body, "[models]", f"include = {include}", "", stack]
    return "\n".join(lines)


def write_matrix_dir(d: Path, matrix_text: str, catalogs: dict[str, str | bytes] | None = None) -> Path:
    """A matrix file with all three catalogs beside it (so the folder's catalogs are used)."""
    d.mkdir(parents=True, exist_ok=True)
    for n in CATALOG_FILES:
        shutil.copyfile(FIX / "catalog" / n, d / n)
    for n, content in (catalogs or {}).items():
        p = d / n
        p.unlink(missing_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    (d / "matrix.toml").write_text(matrix_text)
    return d / "matrix.toml"


def e4b_model() -> dict[str, Any]:
    data = tomllib.loads((REPO / "matrix" / "models.toml").read_text())
    return dict(next(m for m in data["model"] if m["id"] == "google/gemma-4-E4B-it"))


def models_toml(models: list[dict[str, Any]]) -> str:
    out = []
    for m in models:
        out.append("[[model]]")
        out += [f"{k} = {toml_val(v)}" for k, v in m.items() if v is not None]
        out.append("")
    return "\n".join(out)


def policy_text(current: str | None = "triton=26.03", require: str | None = None, extra: str = "") -> str:
    req = require or '[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "l4x1"\nmin = "predicted"\n'
    cur = f"current = {toml_str(current)}\n" if current is not None else ""
    return f'name = "audit"\n{cur}{extra}\n{req}'


def sm(*args: str) -> list[str]:
    return list(args)


def use_workdir(workdir: str | None) -> Path:
    """Point WORK, WARM, FIX and RUNS at the work directory (a fresh temporary one when None)."""
    global WORK, WARM, FIX, RUNS
    WORK = Path(workdir).resolve() if workdir else Path(tempfile.mkdtemp(prefix="stackmatrix-audit-"))
    WORK.mkdir(parents=True, exist_ok=True)
    WARM, FIX, RUNS = WORK / "cache", WORK / "fixtures", WORK / "runs"
    return WORK


def _git(*args: str) -> bytes | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def code_state() -> str:
    """Which code is under test: the module the interpreter imports, and the repository's commit and diff."""
    r = subprocess.run(
        [PY, "-c", "import stackmatrix; print(stackmatrix.__file__)"], capture_output=True, text=True, timeout=120
    )
    if r.returncode != 0:
        raise SystemExit(f"{PY} cannot import stackmatrix (install it, or run `nox -s audit`):\n{r.stderr[-2000:]}")
    module = str(Path(r.stdout.strip()).parent)
    head = (_git("rev-parse", "--short", "HEAD") or b"?").decode().strip() or "?"
    diff = _git("diff", "HEAD")
    dirty = "unknown" if diff is None else (hashlib.sha256(diff).hexdigest()[:12] if diff else "clean")
    return f"stackmatrix from {module}; {PY}; repo {REPO} @ {head} (working-tree diff {dirty})"


def run_tool(args: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(FIX / "home"), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [PY, "-m", "stackmatrix", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def build_fixtures(force: bool = False) -> None:
    stamp = FIX / ".ok"
    want = CODE_STATE
    if stamp.exists() and not force and WARM.is_dir() and stamp.read_text() == want:
        return
    print("building fixtures (warm cache, stored runs) ...", file=sys.stderr)
    if FIX.exists():
        shutil.rmtree(FIX)
    (FIX / "home").mkdir(parents=True)
    (FIX / "catalog").mkdir()
    mroot = REPO / "matrix"
    for n in (*CATALOG_FILES, "default.toml"):
        shutil.copyfile(mroot / n, FIX / "catalog" / n)
    common = ["--cache-dir", str(WARM)]
    # warm: the whole default matrix's expansion (prefetches every vLLM's metadata), a small run, a gate, checks
    steps = [
        ["list", *common, "--reports-dir", str(FIX / "scratch")],
        ["run", "-k", SMALL_K, "--quiet", *common, "--reports-dir", str(FIX / "scratch")],
        [
            "run",
            "-k",
            "gemma-4-e4b-it__l4x1 and triton-26.03",
            "--quiet",
            *common,
            "--reports-dir",
            str(FIX / "scratch"),
        ],
        [
            "gate",
            "--policy",
            str(REPO / "matrix/policies/edge-4xl4.toml"),
            "--candidate",
            "vllm=0.19.0,transformers=4.57.6",
            *common,
            "--reports-dir",
            str(FIX / "scratch"),
        ],
        ["check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6", *common],
        ["check", "--model", "gemma-4-E4B-it", "--gpu", "l4x2", *common],
        ["list", "--matrix", str(FIX / "mini.toml"), *common, "--reports-dir", str(FIX / "scratch")],
    ]
    (FIX / "mini.toml").write_text(mini_matrix())
    for s in steps:
        r = run_tool(s)
        if r.returncode not in (0, 1):
            print(f"warm step failed ({r.returncode}): {shlex.join(s)}\n{r.stderr[-2000:]}", file=sys.stderr)
    # stored runs: two full runs of a small selection, and two shards of one selection
    two = FIX / "two_runs"
    for _ in range(2):
        run_tool(["run", "-k", SMALL_K, "--quiet", *common, "--reports-dir", str(two)])
    for i in (1, 2):
        run_tool(
            ["run", "-k", SMALL_K, "--shard", f"{i}/2", "--quiet", *common, "--reports-dir", str(FIX / f"shard{i}")]
        )
    for d in (two, FIX / "shard1", FIX / "shard2"):
        if not list((d / "runs").glob("*/run.json")):
            raise SystemExit(f"fixture {d} has no run: cannot continue")
    stamp.write_text(want)


def fixture_run_dir(name: str, root: Path) -> Path:
    """The newest run directory under a copied fixture reports dir."""
    return sorted((root / "runs").iterdir())[-1]


# ---------------------------------------------------------------------------------------------------------------
# Hostile file kinds
# ---------------------------------------------------------------------------------------------------------------
def make_bad(path: Path, kind: str, fmt: str = "toml") -> None:
    """Replace ``path`` with a hostile thing of ``kind``; fmt says which garbage is 'almost valid'."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dir":
        path.mkdir()
        (path / "x").write_text("x")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink_loop":
        os.symlink(path.name, path)
    elif kind == "dangling_symlink":
        os.symlink(path.parent / "does-not-exist", path)
    elif kind == "missing":
        pass
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 64 + b"\x00\xff\xfe" * 1000)
    elif kind == "nonutf8":
        if fmt == "toml":
            path.write_bytes(b'name = "caf\xe9 \xff\xfe"\n')
        else:
            path.write_bytes(b'{"run_id": "caf\xe9\xff", "cell": "\xfe"}')
    elif kind == "utf16":
        text = 'name = "x"\n' if fmt == "toml" else '{"run_id": "x"}'
        path.write_bytes(text.encode("utf-16"))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "hugeline":
        if fmt == "toml":
            path.write_bytes(b"# " + b"x" * (16 << 20) + b"\n")
        else:
            path.write_bytes(b'{"run_id": "' + b"x" * (16 << 20) + b'"}')
    elif kind == "deepnest":
        if fmt == "toml":
            path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
        else:
            path.write_text("[" * 100000 + "]" * 100000)
    elif kind == "deepnest_table":
        path.write_text("[" + ".".join(["a"] * 5000) + "]\nx = 1\n")
    elif kind == "wrongtype":
        path.write_text("[1, 2, 3]" if fmt == "json" else "settings = 5\n")
    elif kind == "null":
        path.write_text("null")
    elif kind == "truncated":
        path.write_text('{"run_id": "x", "cells": [' if fmt == "json" else '[settings\npython = "3.12')
    elif kind == "devzero":
        os.symlink("/dev/zero", path)
    else:
        raise ValueError(kind)


BAD_KINDS = ["dir", "fifo", "symlink_loop", "dangling_symlink", "binary", "nonutf8", "empty", "hugeline", "deepnest"]


def copy_reports(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)


# ---------------------------------------------------------------------------------------------------------------
# A run's journal (runs/<id>/journal.jsonl: one finished cell's record per line) and the older cells/ files
# ---------------------------------------------------------------------------------------------------------------
JOURNAL = "journal.jsonl"
L1, L2 = r"journal\.jsonl:1\b", r"journal\.jsonl:2\b"  # a refusal names the journal and the damaged line
JFILE = r"journal\.jsonl"  # the journal as a whole (not a regular file, unreadable)
CELLFILE = r"cells/[^ ]+\.json"  # a legacy run's cell file
LOST = r"(/cells|journal\.jsonl): key 'records'"  # a merged shard lost records it says it wrote: where they were
DEAD_PID = 4194305  # above the largest pid_max Linux allows (2**22): never a live process


def jlines(d: Path) -> list[bytes]:
    """The complete lines of a run's journal (without their newlines)."""
    return (d / JOURNAL).read_bytes().split(b"\n")[:-1]


def jwrite(d: Path, lines: list[bytes], tail: bytes = b"") -> None:
    (d / JOURNAL).write_bytes(b"".join(ln + b"\n" for ln in lines) + tail)


def jline(n: int, new: bytes | Callable[[bytes], bytes]) -> Callable[[Path, Ctx], None]:
    """Replace line ``n`` (1-based) of the journal: by bytes, or by a function of the line's bytes."""

    def f(d: Path, ctx: Ctx) -> None:
        lines = jlines(d)
        lines[n - 1] = new(lines[n - 1]) if callable(new) else new
        jwrite(d, lines)

    return f


def jrec(n: int, change: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Ctx], None]:
    """Replace line ``n``'s record by ``change(record)`` (JSON, json.dumps' spacing as the store writes it)."""
    return jline(n, lambda raw: json.dumps(change(json.loads(raw))).encode())


def without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda r: {k: v for k, v in r.items() if k != key}


def jtail(tail: bytes | Callable[[list[bytes]], bytes]) -> Callable[[Path, Ctx], None]:
    """Append an unterminated last line: what a machine lost half of (read as absent, cut by the next append)."""

    def f(d: Path, ctx: Ctx) -> None:
        lines = jlines(d)
        jwrite(d, lines, tail(lines) if callable(tail) else tail)

    return f


def jset(data: bytes) -> Callable[[Path, Ctx], object]:
    return lambda d, ctx: (d / JOURNAL).write_bytes(data)


def jreplace(kind: str) -> Callable[[Path, Ctx], None]:
    """The journal's name taken by something that is not a regular file of records."""

    def f(d: Path, ctx: Ctx) -> None:
        p = d / JOURNAL
        if kind in ("dir", "fifo", "symlink_loop", "dangling_symlink", "devzero"):
            make_bad(p, kind, "json")
        elif kind == "missing":
            p.unlink()
        elif kind == "symlink-passwd":
            p.unlink()
            os.symlink("/etc/passwd", p)
        elif kind == "symlink-secret":  # a secret file of the user's, one line, newline-terminated
            (ctx.IN / "secret.json").write_text(f'{{"token": "{SECRET_FILE}", "user": "ci"}}\n')
            p.unlink()
            os.symlink(ctx.IN / "secret.json", p)
        elif kind == "binary":
            p.write_bytes((bytes(range(256)) * 64 + b"\x00\xff\xfe\n" * 100) * 4)
        elif kind == "other-store":  # the journal of a run of another store (the other shard's cells)
            p.write_bytes((sorted((FIX / "shard2" / "runs").iterdir())[-1] / JOURNAL).read_bytes())
        elif kind == "symlink-sibling":  # a symlink to another run's journal in the same store
            p.unlink()
            sib = [r for r in sorted(d.parent.iterdir()) if r != d and (r / JOURNAL).is_file()]
            os.symlink(Path("..") / sib[0].name / JOURNAL if sib else "/nonexistent", p)
        else:
            raise ValueError(kind)

    return f


FOREIGN_CELL = "vllm-9.9.9-tf1.0.0__no-such-model__l4x1"


def _cell_of(n: int) -> Callable[[Path], str]:
    return lambda d: str(json.loads(jlines(d)[n - 1])["cell"])


@dataclass(frozen=True)
class JDamage:
    """One hostile journal. ``ideal``: the exit of a command that reads every record of the run (``report RUN``,
    ``merge``, ``run --resume``); ``names``: what its exit 2 must name; ``empty``: no record is left to show."""

    name: str
    apply: Callable[[Path, Ctx], object]
    ideal: frozenset[int]
    names: str = ""
    empty: bool = False


def _jd(
    name: str, apply: Callable[[Path, Ctx], object], ideal: set[int], names: str = "", empty: bool = False
) -> JDamage:
    return JDamage(name, apply, frozenset(ideal), names, empty)


def journal_damages() -> list[JDamage]:
    """The hostile ideas of the old cells/*.json cases, applied to journal.jsonl (line 2 is the damaged one, so
    a refusal must name it, not just the first line)."""
    deep = b"[" * 5000 + b"]" * 5000
    return [
        # a damaged line that is not the torn last one: exit 2 naming journal.jsonl:2
        _jd("line-not-json", jline(2, b"this is not json {"), {2}, L2),
        _jd("line-cut-short", jline(2, lambda raw: raw[: len(raw) // 2]), {2}, L2),
        _jd("line-list", jline(2, b"[1, 2, 3]"), {2}, L2),
        _jd("line-null", jline(2, b"null"), {2}, L2),
        _jd("line-string", jline(2, b'"vllm-0.19.0-tf4.57.6__gemma-4-e4b-it__l4x1"'), {2}, L2),
        _jd("line-number", jline(2, b"12345"), {2}, L2),
        _jd("line-empty-object", jline(2, b"{}"), {2}, L2),
        _jd("line-no-cell", jrec(2, without("cell")), {2}, L2),
        _jd("line-cell-int", jrec(2, lambda r: {**r, "cell": 5}), {2}, L2),
        _jd("line-cell-null", jrec(2, lambda r: {**r, "cell": None}), {2}, L2),
        _jd("line-cell-empty", jrec(2, lambda r: {**r, "cell": ""}), {2}, L2),
        _jd("line-cell-dotdot", jrec(2, lambda r: {**r, "cell": "../../../../ESC_JCELL"}), {2}, L2),
        _jd("line-cell-dotdot-cellish", jrec(2, lambda r: {**r, "cell": "..__..__ESC"}), {2}, L2),
        _jd("line-cell-slash", jrec(2, lambda r: {**r, "cell": "a/b__c__d"}), {2}, L2),
        _jd("line-cell-nul", jrec(2, lambda r: {**r, "cell": "a\x00b__c__d"}), {2}, L2),
        _jd("line-cell-long", jrec(2, lambda r: {**r, "cell": "a" * 64 + "__" + "b" * 64 + "__" + "c" * 70}), {2}, L2),
        _jd("line-cell-dup-key", jline(2, lambda raw: raw[:-1] + b', "cell": "../../ESC_DUPKEY"}'), {2}, L2),
        _jd(
            "line-nonutf8", jline(2, lambda raw: raw.replace(b'"verdict": "', b'"verdict": "\xff\xfe\xe9', 1)), {2}, L2
        ),
        _jd("line-nul-byte", jline(2, lambda raw: raw.replace(b'"verdict": "', b'"verdict": "\x00', 1)), {2}, L2),
        _jd("line-huge-garbage", jline(2, b"x" * (16 << 20)), {2}, L2),
        _jd("line-deep-5000", jline(2, deep), {2}, L2),
        _jd("line-deep-object-5000", jline(2, b'{"a": ' * 5000 + b"1" + b"}" * 5000), {2}, L2),
        _jd("line-deep-in-record", jline(2, lambda raw: raw[:-1] + b', "zz": ' + deep + b"}"), {2}, L2),
        # a well-formed line whose record is not a cell result
        _jd("rec-missing-probes", jrec(2, without("probes")), {2}, L2),
        _jd("rec-missing-verdict", jrec(2, without("verdict")), {2}, L2),
        _jd("rec-bad-verdict", jrec(2, lambda r: {**r, "verdict": "excellent"}), {2}, L2),
        _jd("rec-verdict-int", jrec(2, lambda r: {**r, "verdict": 7}), {2}, L2),
        _jd("rec-probes-not-list", jrec(2, lambda r: {**r, "probes": 5}), {2}, L2),
        _jd("rec-probes-garbage", jrec(2, lambda r: {**r, "probes": [5, "x", None]}), {2}, L2),
        # legitimately fine: a torn last line is ignored, a cell written twice is its last record
        _jd("torn-last-line", jtail(lambda lines: lines[0][: len(lines[0]) // 2]), {0}),
        _jd("torn-last-garbage", jtail(b"\xff\xfe{{{ garbage"), {0}),
        _jd("torn-last-huge", jtail(b'{"cell": "' + b"x" * (8 << 20)), {0}),
        _jd("duplicated-line", lambda d, c: jwrite(d, [*jlines(d), jlines(d)[0]]), {0}),
        _jd("duplicated-journal", lambda d, c: jwrite(d, jlines(d) * 2), {0}),
        _jd("blank-lines", lambda d, c: jwrite(d, [x for ln in jlines(d) for x in (b"", ln, b"   ")]), {0}),
        _jd("crlf-lines", lambda d, c: jwrite(d, [ln + b"\r" for ln in jlines(d)]), {0, 2}, JFILE),
        # well-formed records of other cells: accepting them is defensible, refusing them too
        _jd("cell-names-another", lambda d, c: jrec(2, lambda r: {**r, "cell": _cell_of(1)(d)})(d, c), {0, 2}, L2),
        _jd("cell-foreign", jrec(2, lambda r: {**r, "cell": FOREIGN_CELL}), {0, 2}, L2),
        _jd("journal-of-other-store", jreplace("other-store"), {0, 2}, JFILE),
        _jd("symlink-sibling-journal", jreplace("symlink-sibling"), {0, 2}, JFILE),
        _jd("huge-valid-record", jrec(2, lambda r: {**r, "zz_pad": "x" * (8 << 20)}), {0, 2}, JFILE),
        # no record at all: the run finished no cell
        _jd("empty", jset(b""), {0}, empty=True),
        _jd("missing", jreplace("missing"), {0}, empty=True),
        _jd("only-torn", jset(b'{"cell": "vllm-0'), {0}, empty=True),
        _jd("only-blank", jset(b"\n \n\n"), {0}, empty=True),
        # the journal's name taken by something else: exit 2 naming the journal, at once
        _jd("is-dir", jreplace("dir"), {2}, JFILE),
        _jd("is-fifo", jreplace("fifo"), {2}, JFILE),
        _jd("symlink-loop", jreplace("symlink_loop"), {2}, JFILE),
        _jd("dangling-symlink", jreplace("dangling_symlink"), {2}, JFILE),
        _jd("devzero", jreplace("devzero"), {2}, JFILE),
        _jd("symlink-etc-passwd", jreplace("symlink-passwd"), {2}, JFILE),  # a link is refused, never read through
        _jd("symlink-secret", jreplace("symlink-secret"), {2}, JFILE),
        _jd("binary", jreplace("binary"), {2}, r"journal\.jsonl:\d+"),
    ]


def to_legacy(d: Path) -> None:
    """A run as stores before the journal kept it: one cells/<cell id>.json per record, no journal."""
    (d / "cells").mkdir(exist_ok=True)
    for raw in jlines(d):
        (d / "cells" / f"{json.loads(raw)['cell']}.json").write_bytes(raw)
    (d / JOURNAL).unlink()


def legacy_cell(d: Path) -> Path:
    return sorted((d / "cells").glob("*.json"))[0]


def edit_json_file(p: Path, change: Callable[[Any], Any]) -> None:
    p.write_text(json.dumps(change(json.loads(p.read_text()))))


def edit_meta(d: Path, **kv: Any) -> None:
    """Set (or, with DEL, remove) run.json keys of the run in ``d``."""

    def ch(m: dict[str, Any]) -> dict[str, Any]:
        for k, v in kv.items():
            if v is DEL:
                m.pop(k, None)
            else:
                m[k] = v
        return m

    edit_json_file(d / "run.json", ch)


def make_crashed(d: Path, keep: int = 3) -> None:
    """Turn a stored complete run into one a ``kill -9`` left behind: ``running`` by a process that is gone (this
    boot, a pid that cannot exist), no heartbeat, ``keep`` cells in its journal."""
    edit_meta(d, status="running", pid=DEAD_PID, boot_id=boot_id(), finished=DEL, exit_code=DEL, cells_written=DEL)
    (d / ".alive").unlink(missing_ok=True)
    jwrite(d, jlines(d)[:keep])


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def proc_start(pid: int) -> int:
    """A process's start time in clock ticks since boot, as the store records it in ``pid_start``."""
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])


# ---------------------------------------------------------------------------------------------------------------
# Loopback HTTP servers: a misbehaving index, a black hole, a full backlog, a slow drip
# ---------------------------------------------------------------------------------------------------------------
SERVER_PORT: list[int] = [0]
BLACKHOLE_PORT: list[int] = [0]
BACKLOG_PORT: list[int] = [0]
DRIP_PORT: list[int] = [0]
SERVER_LOG: list[str] = []
_listings: dict[str, list[dict[str, Any]]] = {}


def _warm_listing(project: str) -> list[dict[str, Any]]:
    if project not in _listings:
        rows: list[dict[str, Any]] = []
        for p in WARM.glob(f"index/*/{project}.json"):
            rows = json.loads(p.read_text())["wheels"]
            break
        _listings[project] = rows
    return _listings[project]


def _pep691(project: str, mode: str) -> dict[str, Any]:
    files = []
    for w in _warm_listing(project):
        files.append(
            {
                "filename": w["filename"],
                "url": f"../../files/{w['filename']}",
                "hashes": {"sha256": w["sha256"]} if w.get("sha256") else {},
                "requires-python": w.get("requires_python"),
                "upload-time": w.get("upload_time"),
                "size": w.get("size"),
                "yanked": w.get("yanked", False),
            }
        )
    if mode == "json_nohash":
        for f in files:
            f["hashes"] = {}
    return {"meta": {"api-version": "1.1"}, "name": project, "files": files}


def _pep503(project: str) -> str:
    rows = []
    for w in _warm_listing(project):
        frag = f"#sha256={w['sha256']}" if w.get("sha256") else ""
        rp = f' data-requires-python="{w["requires_python"]}"' if w.get("requires_python") else ""
        rows.append(f'<a href="../../files/{w["filename"]}{frag}"{rp}>{w["filename"]}</a><br/>')
    return "<!DOCTYPE html><html><body>" + "\n".join(rows) + "</body></html>"


JSON_CT = "application/vnd.pypi.simple.v1+json"
INDEX_MODES = [
    "404",  # every page 404
    "500",  # every page 500
    "429",  # rate limited
    "html_garbage",  # 200 text/html, random bytes
    "html_nonutf8",  # 200 text/html, broken encoding and unclosed tags
    "json_invalid",  # PEP 691 content type, not JSON
    "json_empty",  # PEP 691 content type, empty body
    "json_null",  # "null"
    "json_nofiles",  # {"meta": ...} without "files"
    "json_files_str",  # "files": "abc"
    "json_file_nokeys",  # files entries missing filename/url
    "json_file_badtypes",  # filename a number, hashes a list
    "json_mirror",  # real listing (from the warm cache), wheel files 404 (metadata served from the warm cache)
    "json_nohash",  # real listing without hashes, wheel files 404
    "html_mirror",  # PEP 503 listing, wheel files 404
    "json_wheels_garbage",  # listing without hashes; wheels answer 200 garbage (not a zip)
    "json_wheels_badrange",  # listing without hashes; wheels answer 206 with a garbage Content-Range
    "json_wheels_500",  # listing without hashes; wheels answer 500
    "redirect_loop",  # 302 to itself
    "redirect_offsite",  # 302 to another host with the credentials in the Location
    "reset",  # close the connection without an answer
    "echo_auth",  # 404 whose body echoes the Authorization header
]


# A registry's hostile answers (``/v2/<mode>/x/...``, tokens at ``/token/<mode>``) -> the exit ``image facts`` owes.
REGISTRY_MODES = {
    "manifest_garbage": 4,  # 200, random bytes
    "manifest_huge": 4,  # 200, 6 MB of JSON
    "manifest_list": 4,  # 200, "[]"
    "manifest_baddesc": 4,  # layers whose digests are not digests
    "index_noamd64": 4,  # an index with an arm64 image only
    "manifest_404": 2,  # no such image
    "challenge_none": 4,  # 401 without WWW-Authenticate
    "challenge_ftp": 4,  # a token realm that is no http(s) URL
    "token_garbage": 4,  # the realm answers HTML
    "token_401": 2,  # the realm wants credentials
    "token_loop": 2,  # a token the registry then refuses
    "layer_garbage": 4,  # a gzip layer of random bytes
    "layer_bomb": 0,  # 300 MB of zeros in 300 kB of gzip: streamed, never held
    "layer_traversal": 0,  # ../ and absolute paths, a symlink out: nothing is written anywhere
    "blob_500": 4,
    "blob_offsite": 4,  # the blob redirects to another host with credentials in the Location
    "layer_gnulong": 4,  # a 1 MB layer whose GNU long-name header claims 1 GiB (tarfile reads it whole)
    "layer_pax": 4,  # the same with a pax header
    "layer_entries": 4,  # 600,000 empty entries (their headers kept: 495 MB)
    "manifest_many_layers": 4,  # 10,000 tiny layers (443 s to walk)
    "challenge_link_local": 4,  # a token realm at 169.254.169.254: never asked
}
_BLOBS: dict[str, tuple[bytes, str]] = {}  # mode -> (layer bytes, media type), made once


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _layer(mode: str) -> tuple[bytes, str]:
    if mode not in _BLOBS:
        gz = "application/vnd.oci.image.layer.v1.tar+gzip"
        if mode == "layer_bomb":
            info = tarfile.TarInfo("zeros.bin")
            info.size = 300_000_000
            raw = io.BytesIO()
            with tarfile.open(fileobj=raw, mode="w") as tar:
                tar.addfile(info, io.BytesIO(bytes(info.size)))
            _BLOBS[mode] = (gzip.compress(raw.getvalue(), 9), gz)
        elif mode in ("layer_gnulong", "layer_pax"):
            header = tarfile.TarInfo("././@LongLink" if mode == "layer_gnulong" else "././@PaxHeader")
            header.type = tarfile.GNUTYPE_LONGNAME if mode == "layer_gnulong" else tarfile.XHDTYPE
            header.size = 1 << 30
            block = header.tobuf(format=tarfile.GNU_FORMAT if mode == "layer_gnulong" else tarfile.USTAR_FORMAT)
            _BLOBS[mode] = (gzip.compress(block + b"a" * (1 << 20), 1), gz)
        elif mode == "layer_entries":
            empty, entries = tarfile.TarInfo("f"), bytearray()
            for i in range(600_000):
                empty.name = f"d/{i}"
                entries += empty.tobuf(format=tarfile.GNU_FORMAT)
            _BLOBS[mode] = (gzip.compress(bytes(entries), 1), gz)
        elif mode == "layer_traversal":
            members: list[tuple[tarfile.TarInfo, bytes | None]] = []
            for name in ("../../../tmp/stackmatrix-escape", "/etc/stackmatrix-escape", "opt/x/../../../../etc/y"):
                info = tarfile.TarInfo(name)
                info.size = 3
                members.append((info, b"bad"))
            link = tarfile.TarInfo("opt/tritonserver/backends/vllm")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc"
            members.append((link, None))
            _BLOBS[mode] = (gzip.compress(_tar(members)), gz)
        else:
            _BLOBS[mode] = (os.urandom(50_000), gz)
    return _BLOBS[mode]


_BOMB: list[bytes] = []


def _gzip_bomb() -> bytes:
    if not _BOMB:
        c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        chunk = b" " * (1 << 20)
        _BOMB.append(b"".join(c.compress(chunk) for _ in range(256)) + c.flush())
    return _BOMB[0]


def _inflate_bomb(filename: str) -> bytes:
    name, version = filename.split("-")[:2]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", b" " * (64 << 20))
    return out.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _registry(self, parts: list[str]) -> None:
        mode = parts[1] if len(parts) > 1 else ""
        oci = "application/vnd.oci.image.manifest.v1+json"
        challenge = f'Bearer realm="http://127.0.0.1:{SERVER_PORT[0]}/token/{mode}",service="s"'
        if mode == "challenge_none":
            return self._send(401, "who are you")
        if mode == "challenge_ftp":
            return self._send(401, "", headers={"WWW-Authenticate": 'Bearer realm="ftp://x/y",service="s"'})
        if mode in ("token_garbage", "token_401", "token_loop"):
            return self._send(401, "", headers={"WWW-Authenticate": challenge})
        if mode == "challenge_link_local":
            realm = 'Bearer realm="http://169.254.169.254/latest/meta-data/token",service="s"'
            return self._send(401, "", headers={"WWW-Authenticate": realm})
        if len(parts) < 5:
            return self._send(404, "")
        kind, ref = parts[-2], parts[-1]
        config = b'{"architecture": "amd64", "os": "linux"}'
        layer, media = _layer(mode) if mode.startswith("layer_") else (b"", "")
        if kind == "manifests":
            if mode == "manifest_404":
                return self._send(404, '{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')
            if mode == "manifest_garbage":
                return self._send(200, os.urandom(3000), oci)
            if mode == "manifest_huge":
                return self._send(200, json.dumps({"layers": ["x" * 100] * 60_000}), oci)
            if mode == "manifest_list":
                return self._send(200, "[]", oci)
            if mode == "index_noamd64":
                body: dict[str, Any] = {
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [
                        {"digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "arm64"}}
                    ],
                }
                return self._send(200, json.dumps(body), "application/vnd.oci.image.index.v1+json")
            layers: list[dict[str, Any]] = [
                {
                    "mediaType": media or "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(layer) if layer else "sha256:" + "b" * 64,
                    "size": len(layer),
                }
            ]
            if mode == "manifest_baddesc":
                layers = [{"digest": "../../etc/passwd", "size": -1}]
            if mode == "manifest_many_layers":
                layers = [{**layers[0], "digest": "sha256:" + f"{i:064x}"} for i in range(10_000)]
            body = {
                "schemaVersion": 2,
                "mediaType": oci,
                "layers": layers,
                "config": {"digest": _digest(config), "size": len(config)},
            }
            return self._send(200, json.dumps(body), oci)
        if kind == "blobs":
            if ref == _digest(config):
                return self._send(200, config, "application/octet-stream")
            if mode == "blob_500":
                return self._send(500, "boom")
            if mode == "blob_offsite":
                loc = f"http://user:{SECRET_PW}@127.0.0.2:9/x?token={SECRET_TOKEN}"
                return self._send(307, "", headers={"Location": loc})
            if layer:
                return self._send(200, layer, "application/octet-stream")
        return self._send(404, "")

    def _token(self, mode: str) -> None:
        if mode == "token_garbage":
            return self._send(200, "<html>login</html>", "text/html")
        if mode == "token_401":
            return self._send(401, "credentials, please")
        return self._send(200, json.dumps({"token": "t0k3n-" + "x" * 20}), "application/json")

    def log_message(self, fmt: str, *args: Any) -> None:
        SERVER_LOG.append(fmt % args)

    def _send(
        self, code: int, body: bytes | str = b"", ctype: str = "text/plain", headers: dict[str, str] | None = None
    ) -> None:
        data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        mode = parts[0] if parts else ""
        if mode == "v2":
            return self._registry(parts)
        if mode == "token":
            return self._token(parts[1] if len(parts) > 1 else "")
        is_file = len(parts) >= 3 and parts[1] == "files"
        project = parts[2] if len(parts) >= 3 and parts[1] == "simple" else ""
        if mode == "404":
            return self._send(404, "not found")
        if mode in ("500", "429"):
            return self._send(int(mode), "busy")
        if mode == "reset":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "redirect_loop":
            return self._send(302, "", headers={"Location": self.path})
        if mode == "redirect_offsite":
            return self._send(
                302, "", headers={"Location": f"http://user:{SECRET_PW}@127.0.0.2:9/x?token={SECRET_TOKEN}"}
            )
        if mode == "echo_auth":
            return self._send(404, f"no such page; you sent {self.headers.get('Authorization')}")
        if mode == "redirect_link_local":
            return self._send(302, "", headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        if mode == "redirect_plain_offloopback":
            return self._send(302, "", headers={"Location": "http://192.0.2.1/simple/vllm/"})
        if is_file:
            fn = parts[-1]
            if mode == "json_wheels_garbage":
                return self._send(200, os.urandom(300_000), "application/octet-stream")
            if mode == "json_wheels_badrange":
                return self._send(
                    206,
                    b"PK\x05\x06" + os.urandom(1000),
                    "application/octet-stream",
                    {"Content-Range": "bytes garbage"},
                )
            if mode == "json_wheels_500":
                return self._send(500, "boom")
            if mode == "json_wheels_cdbomb":  # 4 GiB claimed, its end record claiming a 3.5 GiB central directory
                size_cd, total = 3_500_000_000, 4 << 30
                eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, size_cd, total - 22 - size_cd, 0)
                tail = bytes(1024 - len(eocd)) + eocd
                rng = {"Content-Range": f"bytes {total - len(tail)}-{total - 1}/{total}"}
                return self._send(206, tail, "application/octet-stream", rng)
            if mode == "json_wheels_inflatebomb":  # a whole small wheel whose METADATA inflates to 64 MiB
                return self._send(200, _inflate_bomb(fn), "application/octet-stream")
            return self._send(404, f"no file {fn}")
        if not project:
            return self._send(404, "no project")
        if mode == "html_garbage":
            return self._send(200, os.urandom(5000), "text/html")
        if mode == "html_nonutf8":
            return self._send(200, b"<html><a href='\xff\xfe.whl'>\xe9<a href=<<<" * 50, "text/html; charset=utf-8")
        if mode == "json_invalid":
            return self._send(200, "{this is not json", JSON_CT)
        if mode == "json_empty":
            return self._send(200, "", JSON_CT)
        if mode == "json_null":
            return self._send(200, "null", JSON_CT)
        if mode == "json_nofiles":
            return self._send(200, json.dumps({"meta": {"api-version": "1.1"}, "name": project}), JSON_CT)
        if mode == "json_files_str":
            return self._send(200, json.dumps({"meta": {}, "files": "abc"}), JSON_CT)
        if mode == "json_file_nokeys":
            return self._send(
                200,
                json.dumps({"meta": {}, "files": [{"url": "x.whl"}, {"filename": "vllm-0.19.0-py3-none-any.whl"}]}),
                JSON_CT,
            )
        if mode == "json_file_badtypes":
            return self._send(
                200, json.dumps({"meta": {}, "files": [{"filename": 5, "url": [], "hashes": []}]}), JSON_CT
            )
        if mode in ("json_mirror", "json_nohash"):
            return self._send(200, json.dumps(_pep691(project, mode)), JSON_CT)
        if mode in (
            "json_wheels_garbage",
            "json_wheels_badrange",
            "json_wheels_500",
            "json_wheels_cdbomb",
            "json_wheels_inflatebomb",
        ):
            return self._send(200, json.dumps(_pep691(project, "json_nohash")), JSON_CT)
        if mode == "html_mirror":
            return self._send(200, _pep503(project), "text/html")
        if mode == "json_gzip_bomb":  # 256 MiB of JSON whitespace in 250 KB of gzip
            return self._send(200, _gzip_bomb(), JSON_CT, {"Content-Encoding": "gzip"})
        if mode == "json_huge":
            return self._send(200, b" " * (70 << 20), JSON_CT)
        if mode == "json_hostile_text":  # the real listing, its upload times a heading, a lone surrogate, a cp3x tag
            doc = _pep691(project, "json_mirror")
            for i, f in enumerate(doc["files"]):
                f["upload-time"] = ("2026-01-01T00:00:00Z\n\n## owned <img src=x>", "\ud800")[i % 2]
            odd = f"{project}-0.19.0-cp3x-abi3-manylinux_2_28_x86_64.whl"
            doc["files"].append({"filename": odd, "url": odd, "hashes": {}})
            return self._send(200, json.dumps(doc), JSON_CT)
        return self._send(404, "unknown mode")

    do_HEAD = do_GET


class TServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


_keep: list[Any] = []


def start_servers() -> None:
    srv = TServer(("127.0.0.1", 0), Handler)
    SERVER_PORT[0] = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _keep.append(srv)

    # black hole: accepts every connection, reads, never answers
    bh = socket.socket()
    bh.bind(("127.0.0.1", 0))
    bh.listen(64)
    BLACKHOLE_PORT[0] = bh.getsockname()[1]

    def hole() -> None:
        while True:
            c, _ = bh.accept()
            _keep.append(c)

    threading.Thread(target=hole, daemon=True).start()
    _keep.append(bh)

    # full backlog: listen(0), never accept, and fill the queue so further connects hang in SYN
    bl = socket.socket()
    bl.bind(("127.0.0.1", 0))
    bl.listen(0)
    BACKLOG_PORT[0] = bl.getsockname()[1]
    _keep.append(bl)
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError, OSError):
            s.connect(("127.0.0.1", BACKLOG_PORT[0]))
        _keep.append(s)

    # slow drip: a 200 with a huge Content-Length, one byte every 20 s (each read beats a 60 s read timeout)
    dr = socket.socket()
    dr.bind(("127.0.0.1", 0))
    dr.listen(64)
    DRIP_PORT[0] = dr.getsockname()[1]

    def drip_one(c: socket.socket) -> None:
        try:
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000000\r\n\r\n")
            while True:
                c.sendall(b"<")
                time.sleep(20)
        except OSError:
            pass

    def drip() -> None:
        while True:
            c, _ = dr.accept()
            threading.Thread(target=drip_one, args=(c,), daemon=True).start()

    threading.Thread(target=drip, daemon=True).start()
    _keep.append(dr)


def idx(mode: str, creds: bool = True, query: str = "") -> str:
    auth = f"user:{SECRET_PW}@" if creds else ""
    return f"http://{auth}127.0.0.1:@PORT@/{mode}/simple{query}"


# ---------------------------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------------------------
def mini_setup(matrix_text: str, catalogs: dict[str, str | bytes] | None = None) -> Callable[[Ctx], None]:
    """Write the mini matrix (placeholders such as @W@ substituted) and the catalogs into @IN@/m/."""

    def f(ctx: Ctx) -> None:
        write_matrix_dir(ctx.IN / "m", ctx.sub(matrix_text), catalogs)

    return f


M = "@IN@/m/matrix.toml"


def corpus_ids() -> None:
    cat = "ids"
    names: list[tuple[str, str, set[int]]] = [
        ("dotdot6", "../../../../../../ESC", {2}),
        ("dotdot9", "../../../../../../../../../ESC", {2}),
        ("dotdot-only", "..", {2}),
        ("slash", "a/b", {2}),
        ("abs", "@W@/ESC_ABS", {2}),  # absolute, inside the watched sandbox: a write there is an ESCAPE
        ("backslash", "..\\..\\ESC", {0, 2}),
        ("empty", "", {2}),
        ("double-underscore", "__", {2}),
        ("underscores-inside", "l4__x1", {2}),
        ("nul", "l4\x00x1", {2}),
        ("newline", "l4\nx1", {2}),
        ("long-5000", "t" * 5000, {2}),
        ("unicode-cjk", "\u76ee\u6807", {0, 2}),  # CJK ideographs
        ("unicode-rtl", "\u202eESC", {2}),
        ("glob-chars", "*?[x]", {0, 2}),
        ("shell-meta", "$(touch ESC_SHELL)`id`", {0, 2}),
    ]
    for label, tname, ideal in names:
        add(
            cat, f"target-{label}-run", sm("run", "--matrix", M, "--quiet"), ideal, setup=mini_setup(mini_matrix(tname))
        )
    for label, tname, ideal in names[::8]:
        add(cat, f"target-{label}-list", sm("list", "--matrix", M), ideal, setup=mini_setup(mini_matrix(tname)))
    # report render of a run whose cells include a traversal target (render paths are per run id, not cell)
    # catalog model ids with odd repo names (pattern ^[\w.-]+/[\w.-]+$)
    model_ids = [
        ("dotdot-repo", "google/..", {2}),
        ("dot-repo", "google/.", {2}),
        ("dotdot-org", "../gemma", {0, 2}),
        ("dunder-repo", "google/a__b", {2}),
        ("dunder-only", "google/__", {2}),
        ("long-repo", "google/" + "g" * 300, {2}),
        ("unicode-repo", "google/\uff47\uff45\uff4d\uff4d\uff41", {0, 2}),  # fullwidth "gemma"
        ("case-dup", "GOOGLE/GEMMA-4-E4B-IT", {0, 2}),
    ]
    for label, mid, ideal in model_ids:
        m = {**e4b_model(), "id": mid}
        add(
            cat,
            f"model-{label}-run",
            sm("run", "--matrix", M, "--quiet"),
            ideal,
            setup=mini_setup(mini_matrix(include='["*"]'), {"models.toml": models_toml([m])}),
        )
    # a model id the pattern should refuse
    for label, mid in [
        ("slash-in-repo", "google/a/b"),
        ("space", "google/a b"),
        ("empty", ""),
        ("nul", "google/a\x00"),
    ]:
        m = {**e4b_model(), "id": mid}
        add(
            cat,
            f"model-{label}-list",
            sm("list", "--matrix", M),
            {2},
            setup=mini_setup(mini_matrix(include='["*"]'), {"models.toml": models_toml([m])}),
        )
    # run refs
    refs = [
        ("ref-dotdot", "../../.."),
        ("ref-dotdot-esc", "../../../ESC"),
        ("ref-root", "/"),
        ("ref-empty", ""),
        ("ref-dot", "."),
        ("ref-runs", "runs"),
        ("ref-glob", "*"),
        ("ref-nul-ish", "2026\\x00"),
        ("ref-long", "9" * 5000),
        ("ref-etc", "/etc"),
    ]
    for label, ref in refs:
        add(cat, f"report-{label}", sm("report", ref, "--format", "md"), {2}, reports="two_runs")
        if label in ("ref-dotdot", "ref-dotdot-esc", "ref-root", "ref-empty", "ref-etc"):
            add(cat, f"diff-{label}", sm("diff", ref, ref), {2}, reports="two_runs")
    add(
        cat,
        "gate-baseline-dotdot",
        sm(
            "gate",
            "--policy",
            "@IN@/p.toml",
            "--candidate",
            "vllm=0.19.0,transformers=4.57.6",
            "--baseline",
            "../../..",
        ),
        {2},
        reports="two_runs",
        setup=lambda c: (c.IN / "p.toml").write_text(policy_text(None)),
    )
    # run.json whose run_id walks out of the reports dir: report renders into <reports>/rendered/<run_id>
    for depth in (2, 4, 6):
        rid = "../" * depth + "ESC_RUNID"

        def setup_rid(ctx: Ctx, rid: str = rid) -> None:
            d = fixture_run_dir("two_runs", ctx.R)
            meta = json.loads((d / "run.json").read_text())
            meta["run_id"] = rid
            (d / "run.json").write_text(json.dumps(meta))

        add(
            cat,
            f"report-runid-dotdot{depth}-by-path",
            sm("report", "@R@/runs/" + "LATEST", "--format", "md"),
            {2},
            reports="two_runs",
            setup=setup_rid,
        )
        add(
            cat,
            f"report-runid-dotdot{depth}-default",
            sm("report", "--format", "md"),
            {0, 2},
            reports="two_runs",
            setup=setup_rid,
        )
        add(cat, f"history-runid-dotdot{depth}", sm("history"), {0, 2}, reports="two_runs", setup=setup_rid)
    # --exit-status names
    for label, es in [
        ("dotdot", "../../ESC=137"),
        ("empty-name", "=137"),
        ("no-code", "shard1="),
        ("word-code", "shard1=abc"),
        ("huge-code", "shard1=" + "9" * 40),
        ("negative", "shard1=-9"),
        ("double-eq", "a=b=1"),
        ("unicode-digit", "shard1=\uff11\uff13\uff17"),  # fullwidth 137
        ("no-eq", "shard1"),
        ("space-code", "shard1= 137 "),
    ]:
        ideal = {0} if label in ("negative", "space-code") else {2}
        add(
            cat,
            f"merge-exit-status-{label}",
            sm("merge", "@IN@/shard1", "@IN@/shard2", "--exit-status", es),
            ideal,
            setup=setup_shards,
        )


def setup_shards(ctx: Ctx) -> None:
    copy_reports(FIX / "shard1", ctx.IN / "shard1")
    copy_reports(FIX / "shard2", ctx.IN / "shard2")


def corpus_creds() -> None:
    cat = "creds"
    cmds = {
        "list": sm("list", "-k", SMALL_K),
        "check": sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6"),
        "run": sm("run", "-k", SMALL_K, "--quiet"),
    }
    ideal_by_mode = {
        "json_mirror": {0},
        "html_mirror": {0},
        "json_nohash": {0, 4},
    }
    for mode in INDEX_MODES:
        for cname, cargs in cmds.items():
            if cname == "list" and mode not in (
                "404",
                "500",
                "html_garbage",
                "json_invalid",
                "json_mirror",
                "json_wheels_garbage",
                "redirect_offsite",
                "echo_auth",
            ):
                continue
            if cname == "run" and mode not in (
                "json_mirror",
                "html_mirror",
                "json_wheels_garbage",
                "json_wheels_badrange",
                "redirect_offsite",
                "echo_auth",
            ):
                continue
            ideal = ideal_by_mode.get(mode, {4})
            add(
                cat,
                f"{mode}-{cname}",
                [*cargs, "--index-url", idx(mode)],
                ideal,
                env={"HF_TOKEN": SECRET_ENV},
                max_s=30,
            )
    # query-string tokens
    for mode in ("json_mirror", "500", "json_wheels_garbage", "reset"):
        ideal = {0, 2} if mode == "json_mirror" else {2, 4}
        add(
            cat,
            f"query-token-{mode}-list",
            cmds["list"] + ["--index-url", idx(mode, False, f"?token={SECRET_TOKEN}")],
            ideal,
            max_s=30,
        )
        add(
            cat,
            f"query-token-{mode}-check",
            cmds["check"] + ["--index-url", idx(mode, True, f"?token={SECRET_TOKEN}")],
            ideal,
            max_s=30,
        )
    # credentials from the environment variable instead of the flag
    for mode in ("json_mirror", "json_wheels_garbage"):
        add(
            cat,
            f"env-index-url-{mode}-run",
            sm("run", "-k", SMALL_K, "--quiet"),
            {0} if mode == "json_mirror" else {4},
            env={"STACKMATRIX_INDEX_URL": idx(mode)},
            max_s=30,
        )
    # credentials to an unreachable host (connection refused on port 9) and to a bad scheme
    add(
        cat,
        "refused-list",
        cmds["list"] + ["--index-url", f"http://user:{SECRET_PW}@127.0.0.1:9/simple"],
        {4},
        max_s=30,
    )
    add(
        cat,
        "refused-tiny",
        [
            *sm("tiny", "build", "gemma-4-E4B-it", "--transformers", "nope!"),
            "--index-url",
            f"http://user:{SECRET_PW}@127.0.0.1:9/simple",
        ],
        {2, 4},
        max_s=30,
    )
    add(
        cat, "badscheme-list", cmds["list"] + ["--index-url", f"ftp://user:{SECRET_PW}@127.0.0.1/simple"], {2}, max_s=30
    )
    add(cat, "nohost-list", cmds["list"] + ["--index-url", f"http://user:{SECRET_PW}@/simple"], {2}, max_s=30)
    add(
        cat,
        "at-in-password-list",
        cmds["list"] + ["--index-url", f"http://user:{SECRET_PW}@x@127.0.0.1:9/simple"],
        {2, 4},
        max_s=30,
    )
    # gate / merge-report of a run made through a credentialed mirror
    add(
        cat,
        "json_mirror-gate",
        sm(
            "gate",
            "--policy",
            "@IN@/p.toml",
            "--candidate",
            "vllm=0.19.0,transformers=4.57.6",
            "--summary",
            "@OUT@/summary.md",
            "--index-url",
            idx("json_mirror"),
        ),
        {0, 1},
        setup=lambda c: (c.IN / "p.toml").write_text(policy_text(None)),
        allowed=["@OUT@"],
        max_s=30,
    )
    add(
        cat,
        "json_wheels_garbage-gate",
        sm(
            "gate",
            "--policy",
            "@IN@/p.toml",
            "--candidate",
            "vllm=0.19.0,transformers=4.57.6",
            "--summary",
            "@OUT@/summary.md",
            "--index-url",
            idx("json_wheels_garbage"),
        ),
        {4},
        setup=lambda c: (c.IN / "p.toml").write_text(policy_text(None)),
        allowed=["@OUT@"],
        max_s=30,
    )
    # A run through a mirror serving garbage wheel files ends with exit 4 before any run is stored (the project's
    # decision), so the report that follows finds no stored run: exit 3. The shell exits 100 (a wrong exit) when the
    # run itself did not exit 4; ORPHAN_RUN catches a run stored as complete anyway.
    run_cmd = shlex.join(
        [
            PY,
            "-m",
            "stackmatrix",
            "run",
            "-k",
            SMALL_K,
            "--quiet",
            "--cache-dir",
            "@C@",
            "--reports-dir",
            "@R@",
            "--index-url",
            idx("json_wheels_garbage"),
        ]
    )
    report_cmd = shlex.join([PY, "-m", "stackmatrix", "report", "--format", "all", "--reports-dir", "@R@"])
    add(
        cat,
        "json_wheels_garbage-run-then-report-all",
        [
            "@SH@",
            f"{run_cmd}; r=$?; {report_cmd}; p=$?; "
            'if [ "$r" -ne 4 ]; then echo "audit: run exited $r (expected 4), report $p" >&2; exit 100; fi; exit $p',
        ],
        {3},
        auto_flags=False,
        timeout=90,
        note="shell: run through a garbage mirror (must exit 4, storing nothing), then render every format (exit 3)",
    )


def corpus_unreadable() -> None:
    cat = "unreadable"
    # as --matrix
    for kind in [*BAD_KINDS, "missing", "utf16", "wrongtype", "truncated", "deepnest_table", "devzero"]:
        add(
            cat,
            f"matrix-{kind}",
            sm("list", "--matrix", "@IN@/bad.toml"),
            {2},
            setup=lambda c, k=kind: make_bad(c.IN / "bad.toml", k),
        )
    # a catalog beside the matrix
    for catalog in CATALOG_FILES:
        for kind in (
            ("dir", "fifo", "binary", "deepnest")
            if catalog != "models.toml"
            else ("dir", "fifo", "binary", "nonutf8", "empty", "deepnest", "wrongtype")
        ):

            def s(c: Ctx, catalog: str = catalog, kind: str = kind) -> None:
                write_matrix_dir(c.IN / "m", mini_matrix())
                make_bad(c.IN / "m" / catalog, kind)

            # a dir catalog makes the folder not hold 'all three' -> embedded catalogs: exit 0 is defensible
            ideal = {0, 2} if kind == "dir" else {2}
            add(cat, f"catalog-{catalog.split('.')[0]}-{kind}", sm("list", "--matrix", M), ideal, setup=s)
    # as --policy
    for kind in ("dir", "fifo", "symlink_loop", "binary", "nonutf8", "empty", "deepnest", "missing", "wrongtype"):
        add(
            cat,
            f"policy-{kind}",
            sm("gate", "--policy", "@IN@/p.toml", "--candidate", "vllm=0.19.0,transformers=4.57.6"),
            {2},
            setup=lambda c, k=kind: make_bad(c.IN / "p.toml", k),
        )

    # stored-run files inside a reports dir, read by history/diff/report/merge
    def corrupt(which: str, kind: str, shards: bool = False) -> Callable[[Ctx], None]:
        def f(ctx: Ctx) -> None:
            if shards:
                setup_shards(ctx)
                d = sorted((ctx.IN / "shard1" / "runs").iterdir())[-1]
            else:
                d = fixture_run_dir("two_runs", ctx.R)
            if which == "run":
                make_bad(d / "run.json", kind, "json")
            elif which == "plan":
                make_bad(d / "plan.json", kind, "json")
            elif which == "legacy-cell":  # a run from before the journal: one file per cell
                to_legacy(d)
                make_bad(legacy_cell(d), kind, "json")
            elif which == "index":
                make_bad(ctx.R / "index.sqlite", kind, "json")

        return f

    all_kinds = [
        "dir",
        "fifo",
        "symlink_loop",
        "binary",
        "nonutf8",
        "empty",
        "hugeline",
        "deepnest",
        "wrongtype",
        "null",
        "truncated",
    ]
    few = ["fifo", "binary", "deepnest", "wrongtype", "dir"]
    # a run dir whose run.json is unreadable may be skipped (0) or named (2); a bad cell of a run must be named
    plan: list[tuple[str, str, list[str], list[str]]] = [
        ("run", "history", all_kinds, []),
        ("run", "diff", ["fifo", "binary", "deepnest"], []),
        ("run", "report", ["fifo", "binary", "deepnest"], ["--format", "md"]),
        # runs from before the journal (cells/<cell id>.json) are still read: a few of the old cases
        ("legacy-cell", "report", ["fifo", "binary", "deepnest", "nonutf8", "wrongtype"], ["@R@/runs/LATEST"]),
        ("legacy-cell", "history", ["binary"], []),
        ("index", "history", ["dir", "fifo", "symlink_loop", "binary", "empty"], []),
        ("index", "report", ["dir", "binary"], ["--format", "md"]),
    ]
    for which, cmd, kinds, extra in plan:
        for kind in kinds:
            ideal = {2} if (which == "legacy-cell" and cmd == "report") else {0, 2}
            names = CELLFILE if which == "legacy-cell" else ""
            add(
                cat,
                f"{which}-{kind}-{cmd}",
                sm(cmd, *extra),
                ideal,
                reports="two_runs",
                setup=corrupt(which, kind),
                names=names,
            )
    add(
        cat,
        "legacy-baseline-report",
        sm("report", "@R@/runs/LATEST", "--format", "md,json"),
        {0},
        reports="two_runs",
        setup=lambda c: to_legacy(fixture_run_dir("two_runs", c.R)),
    )
    for which, kinds in (
        ("run", [*few, "nonutf8", "null"]),
        ("legacy-cell", ["fifo", "binary", "nonutf8"]),
        ("plan", [*few, "null", "empty"]),
    ):
        for kind in kinds:
            ideal = {0, 2} if (which, kind) == ("plan", "null") else {2}
            add(
                cat,
                f"{which}-{kind}-merge",
                sm("merge", "@IN@/shard1", "@IN@/shard2"),
                ideal,
                setup=corrupt(which, kind, shards=True),
                names=CELLFILE if which == "legacy-cell" else "",
            )
    corpus_journal_readers(cat)


def corpus_journal_readers(cat: str) -> None:
    """Every hostile journal read by ``report RUN`` (reads each record: the strict reader); a sample through
    ``history``, ``diff`` and a default ``report`` (these leave a damaged run out with a warning: 0, or name it)."""

    def damage(jd: JDamage) -> Callable[[Ctx], object]:
        return lambda ctx: jd.apply(fixture_run_dir("two_runs", ctx.R), ctx)

    sample = {"line-not-json", "line-cell-dotdot", "line-deep-5000", "rec-bad-verdict", "torn-last-line", "is-fifo"}
    sample |= {"symlink-secret", "duplicated-line", "empty", "line-huge-garbage", "binary"}
    for jd in journal_damages():
        ideal = set(jd.ideal) | ({3} if jd.empty else set())  # report RUN of a run without a record: nothing to show
        add(
            cat,
            f"journal-{jd.name}-report",
            sm("report", "@R@/runs/LATEST", "--format", "md,json"),
            ideal,
            reports="two_runs",
            setup=damage(jd),
            names=jd.names,
        )
        if jd.name not in sample:
            continue
        lenient = ideal | {0}  # the damaged run is left out with a warning; the rest of the store keeps working
        for label, args in (
            ("history", sm("history")),
            ("diff", sm("diff")),
            ("report-default", sm("report", "--format", "md")),
        ):
            add(cat, f"journal-{jd.name}-{label}", args, lenient, reports="two_runs", setup=damage(jd), names=jd.names)


def corpus_versions() -> None:
    cat = "versions"
    bad = [
        ("empty", ""),
        ("word", "latest"),
        ("specifier", ">=0.19"),
        ("star", "0.19.*"),
        ("semicolon", "0.19.0; rm -rf /"),
        ("dotdot", "../../0.19.0"),
        ("unicode-digits", "\uff10.\uff11\uff19.\uff10"),  # fullwidth 0.19.0
        ("trailing-nl", "0.19.0\n"),
        ("huge", "1" * 5000),
        ("nan", "nan"),
        ("space", " "),
        ("eqeq", "==0.19.0"),
        ("negative", "-1"),
        ("at-symbol", "@newest"),
    ]
    pol = lambda c: (c.IN / "p.toml").write_text(policy_text(None))  # noqa: E731

    def stack_vllm(v: str) -> str:
        return f'[[stack]]\nkind = "vllm"\nvllm = [{toml_str(v)}]\ntransformers = ["4.57.6"]\n'

    def stack_tf(v: str) -> str:
        return f'[[stack]]\nkind = "vllm"\nvllm = ["0.19.0"]\ntransformers = [{toml_str(v)}]\n'

    for i, (label, v) in enumerate(bad):
        if i >= 10:  # the tail only through the cheap gate path
            add(
                cat,
                f"gate-candidate-vllm-{label}",
                sm("gate", "--policy", "@IN@/p.toml", "--candidate", f"vllm={v},transformers=4.57.6"),
                {2},
                setup=pol,
            )
            continue
        # "0.19.0\n" normalizes to 0.19.0 (packaging strips whitespace): accepting it is fine
        add(
            cat,
            f"check-vllm-{label}",
            sm("check", "--model", "gemma-4-E4B-it", "--vllm", v, "--transformers", "4.57.6"),
            {0, 2} if v.strip() == "0.19.0" else {2},
        )
        if i % 4 == 0:
            add(
                cat,
                f"check-transformers-{label}",
                sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", v),
                {2},
            )
            if i % 8 == 0:
                add(cat, f"tiny-build-tf-{label}", sm("tiny", "build", "gemma-4-E4B-it", "--transformers", v), {2})
            add(
                cat,
                f"matrix-vllm-list-{label}",
                sm("list", "--matrix", M),
                {0} if v == "@newest" else {2},
                setup=mini_setup(mini_matrix(stack=stack_vllm(v))),
            )
        else:
            add(
                cat,
                f"gate-candidate-vllm-{label}",
                sm("gate", "--policy", "@IN@/p.toml", "--candidate", f"vllm={v},transformers=4.57.6"),
                {1, 2} if v.strip() == "0.19.0" else {2},
                setup=pol,
            )
            if i % 4 == 1:
                add(
                    cat,
                    f"matrix-tf-list-{label}",
                    sm("list", "--matrix", M),
                    {0} if v == "@newest" else {2},
                    setup=mini_setup(mini_matrix(stack=stack_tf(v))),
                )
    for j, (label, v) in enumerate(bad[:4]):
        cur = f"triton={v}" if j % 2 else f"vllm={v}"
        add(cat, f"check-triton-{label}", sm("check", "--model", "gemma-4-E4B-it", "--triton", v), {2})
        add(
            cat,
            f"policy-current-{label}",
            sm("gate", "--policy", "@IN@/p.toml", "--candidate", "vllm=0.19.0,transformers=4.57.6"),
            {2},
            setup=lambda c, cur=cur: (c.IN / "p.toml").write_text(policy_text(cur)),
        )
        add(
            cat,
            f"matrix-vllm-range-{label}",
            sm("list", "--matrix", M),
            {2},
            setup=mini_setup(
                mini_matrix(
                    stack=f'[[stack]]\nkind = "vllm"\nvllm = {{ from = {toml_str(v)} }}\ntransformers = ["4.57.6"]\n'
                )
            ),
        )
        if j % 2:
            continue
        add(
            cat,
            f"matrix-vllm-range-to-{label}",
            sm("list", "--matrix", M),
            {2},
            setup=mini_setup(
                mini_matrix(
                    stack='[[stack]]\nkind = "vllm"\n'
                    f'vllm = {{ from = "0.19.0", to = {toml_str(v)} }}\ntransformers = ["4.57.6"]\n'
                )
            ),
        )
        add(
            cat,
            f"matrix-triton-pin-{label}",
            sm("list", "--matrix", M),
            {2},
            setup=mini_setup(mini_matrix(stack=f'[[stack]]\nkind = "triton-vllm"\ntriton = [{toml_str(v)}]\n')),
        )
        add(
            cat,
            f"matrix-triton-range-{label}",
            sm("list", "--matrix", M),
            {2},
            setup=mini_setup(
                mini_matrix(stack=f'[[stack]]\nkind = "triton-vllm"\ntriton = {{ from = {toml_str(v)} }}\n')
            ),
        )
    # a valid but absent version, and ranges that select nothing
    add(
        cat,
        "check-vllm-absent",
        sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.0.1", "--transformers", "4.57.6"),
        {2},
    )
    add(
        cat,
        "matrix-vllm-range-inverted",
        sm("list", "--matrix", M),
        {2, 3},
        setup=mini_setup(
            mini_matrix(
                stack='[[stack]]\nkind = "vllm"\nvllm = { from = "0.19.0", to = "0.15.0" }\ntransformers = ["4.57.6"]\n'
            )
        ),
    )
    add(
        cat,
        "matrix-triton-range-inverted",
        sm("list", "--matrix", M),
        {2, 3},
        setup=mini_setup(
            mini_matrix(stack='[[stack]]\nkind = "triton-vllm"\ntriton = { from = "26.03", to = "25.01" }\n')
        ),
    )
    # candidate spec shapes
    for label, spec in [
        ("empty", ""),
        ("comma", ","),
        ("eq", "="),
        ("bare-key", "vllm"),
        ("no-value", "vllm="),
        ("dup-key", "vllm=0.19.0,vllm=0.19.1"),
        ("unknown-key", "cuda=12"),
        ("kind-bogus", "kind=bogus"),
        ("kind-python-no-triton", "kind=triton-python"),
        ("triton-python-with-vllm", "triton=26.03,kind=triton-python,vllm=0.19.0"),
        ("triton-unknown", "triton=99.99"),
        ("triton-range-ish", "triton=25.01..26.03"),
        ("spaces", "  vllm = 0.19.0 , transformers = 4.57.6  "),
    ]:
        ideal = {0, 1} if label == "spaces" else {2}
        add(
            cat, f"gate-candidate-{label}", sm("gate", "--policy", "@IN@/p.toml", "--candidate", spec), ideal, setup=pol
        )
    # [settings] platform / python
    for label, plat, ideal in [
        ("empty", '""', {2}),
        ("unknown", '"sparc64"', {2}),
        ("dotdot", '"../../x"', {2}),
        ("aarch64", '"aarch64"', {0}),
        ("number", "64", {2}),
    ]:
        add(
            cat,
            f"settings-platform-{label}-run",
            sm("run", "--matrix", M, "--quiet"),
            ideal,
            setup=mini_setup(mini_matrix(settings={"platform": plat})),
        )
    # a Python no wheel supports gives blocked/python-unsupported cells (0) or is refused (2)
    for label, py, ideal in [("3.99", '"3.99"', {0, 2}), ("2.7", '"2.7"', {2}), ("3.12.1", '"3.12.1"', {2})]:
        add(
            cat,
            f"settings-python-{label}-run",
            sm("run", "--matrix", M, "--quiet"),
            ideal,
            setup=mini_setup(mini_matrix(settings={"python": py})),
        )


def corpus_writefault() -> None:
    cat = "writefault"

    def policy(ctx: Ctx) -> None:
        (ctx.IN / "p.toml").write_text(policy_text(None))

    def reports_is_file(ctx: Ctx) -> None:
        ctx.R.parent.mkdir(parents=True, exist_ok=True)
        ctx.R.write_text("i am a file")

    def reports_under_file(ctx: Ctx) -> None:
        ctx.R.parent.mkdir(parents=True, exist_ok=True)
        ctx.R.write_text("i am a file")
        ctx.R = ctx.R / "sub"

    def copy_fixture(fixture: str, dst: Path) -> None:
        for p in (FIX / fixture).iterdir():
            if p.is_dir():
                shutil.copytree(p, dst / p.name)
            else:
                shutil.copy2(p, dst / p.name)

    def ro(fixture: str | None) -> Callable[[Ctx], None]:
        def f(ctx: Ctx) -> None:
            ctx.mount(ctx.R, "size=4m")
            if fixture:
                copy_fixture(fixture, ctx.R)
            ctx.remount_ro(ctx.R)

        return f

    def full(fixture: str | None) -> Callable[[Ctx], None]:
        def f(ctx: Ctx) -> None:
            ctx.mount(ctx.R, "size=512k,nr_inodes=1024" if fixture else "size=64k,nr_inodes=256")
            if fixture:
                copy_fixture(fixture, ctx.R)
            fill(ctx.R)

        return f

    def as_is(step: Callable[[Ctx], None]) -> Callable[[str | None], Callable[[Ctx], None]]:
        return lambda fixture: step

    gate_args = sm("gate", "--policy", "@IN@/p.toml", "--candidate", "vllm=0.19.0,transformers=4.57.6")
    cmds: dict[str, tuple[list[str], str | None, Callable[[Ctx], None] | None]] = {
        "run": (sm("run", "-k", SMALL_K, "--quiet"), None, None),
        "gate": (gate_args, None, policy),
        "merge": (sm("merge", "@IN@/shard1", "@IN@/shard2"), None, setup_shards),
        "history": (sm("history"), "two_runs", None),
        "diff": (sm("diff"), "two_runs", None),
        "report": (sm("report", "--format", "md"), "two_runs", None),
    }
    faults: list[tuple[str, Callable[[str | None], Callable[[Ctx], None]], bool]] = [
        ("reports-is-file", as_is(reports_is_file), False),
        ("reports-under-file", as_is(reports_under_file), False),
        ("reports-ro", ro, True),
        ("reports-full", full, True),
    ]
    for cname, (args, fixture, pre) in cmds.items():
        for fault, mk, root in faults:
            if fixture and fault in ("reports-is-file", "reports-under-file"):
                ideal = {2, 3, 4}
            else:
                ideal = {2, 4} if cname not in ("history", "diff", "report") else {0, 2, 4}
            if fault == "reports-ro" and cname in ("history", "diff"):
                ideal = {0, 2, 4}  # reading a read-only reports dir may well work

            def s(
                ctx: Ctx,
                mk: Callable[[str | None], Callable[[Ctx], None]] = mk,
                fixture: str | None = fixture,
                pre: Callable[[Ctx], None] | None = pre,
            ) -> None:
                if pre:
                    pre(ctx)
                mk(fixture)(ctx)

            add(cat, f"{cname}-{fault}", args, ideal, setup=s, root=root)

    # cache dir faults
    def cache_file(ctx: Ctx) -> None:
        shutil.rmtree(ctx.C, ignore_errors=True)
        ctx.C.write_text("i am a file")

    def cache_under_file(ctx: Ctx) -> None:
        shutil.rmtree(ctx.C, ignore_errors=True)
        ctx.C.write_text("i am a file")
        ctx.C = ctx.C / "sub"

    def cache_ro_warm(ctx: Ctx) -> None:
        shutil.rmtree(ctx.C, ignore_errors=True)
        ctx.mount(ctx.C, "size=64m")
        subprocess.run(["cp", "-a", f"{WARM}/.", str(ctx.C)], check=True)
        ctx.remount_ro(ctx.C)

    def cache_ro_empty(ctx: Ctx) -> None:
        shutil.rmtree(ctx.C, ignore_errors=True)
        ctx.mount(ctx.C, "size=1m,ro")

    def cache_full(ctx: Ctx) -> None:
        shutil.rmtree(ctx.C, ignore_errors=True)
        ctx.mount(ctx.C, "size=64k,nr_inodes=256")
        fill(ctx.C)

    cache_cmds = [
        ("list", sm("list", "-k", SMALL_K)),
        ("check", sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6")),
        ("run", sm("run", "-k", SMALL_K, "--quiet")),
    ]
    cache_faults: list[tuple[str, Callable[[Ctx], None], bool]] = [
        ("cache-is-file", cache_file, False),
        ("cache-under-file", cache_under_file, False),
        ("cache-ro-warm", cache_ro_warm, True),
        ("cache-ro-empty", cache_ro_empty, True),
        ("cache-full", cache_full, True),
    ]
    for fault, setup, root in cache_faults:
        for cname, args in cache_cmds:
            ideal = {0} if fault == "cache-ro-warm" else {2, 4}
            cache = "empty" if fault != "cache-ro-warm" else "none"
            add(cat, f"{cname}-{fault}", args, ideal, setup=setup, cache=cache, root=root)

    # output paths: report --out, diff --output, gate --summary
    def out_dir(ctx: Ctx) -> None:
        (ctx.OUT / "target").mkdir(parents=True)

    def out_under_file(ctx: Ctx) -> None:
        ctx.OUT.mkdir(parents=True, exist_ok=True)
        (ctx.OUT / "file").write_text("x")

    def out_ro(ctx: Ctx) -> None:
        ctx.mount(ctx.OUT, "size=1m,ro")

    def out_full(ctx: Ctx) -> None:
        ctx.mount(ctx.OUT, "size=64k,nr_inodes=256")
        fill(ctx.OUT)

    def out_fifo(ctx: Ctx) -> None:
        ctx.OUT.mkdir(parents=True, exist_ok=True)
        os.mkfifo(ctx.OUT / "target")

    def out_symlink_dangling(ctx: Ctx) -> None:
        ctx.OUT.mkdir(parents=True, exist_ok=True)
        os.symlink("/nonexistent/dir/x", ctx.OUT / "target")

    outs: dict[str, tuple[Callable[[Ctx], None], bool]] = {
        "dir": (out_dir, False),
        "under-file": (out_under_file, False),
        "ro": (out_ro, True),
        "full": (out_full, True),
        "fifo": (out_fifo, False),
        "symlink-dangling": (out_symlink_dangling, False),
    }
    for oname, (setup, root) in outs.items():
        tgt = "@OUT@/file/x" if oname == "under-file" else "@OUT@/target"
        # replacing a FIFO or a dangling symlink by the written file is defensible; failing cleanly too
        out_ideal = {0, 2, 4} if oname in ("fifo", "symlink-dangling") else {2, 4}
        report_ideal = {0, 2, 4} if oname in ("dir",) else out_ideal
        report_args = sm("report", "--format", "md,csv", "--out", tgt)
        add(
            cat,
            f"report-out-{oname}",
            report_args,
            report_ideal,
            reports="two_runs",
            setup=setup,
            allowed=["@OUT@"],
            root=root,
        )
        add(
            cat,
            f"diff-output-{oname}",
            sm("diff", "--output", tgt),
            out_ideal,
            reports="two_runs",
            setup=setup,
            allowed=["@OUT@"],
            root=root,
        )

        def gs(ctx: Ctx, setup: Callable[[Ctx], None] = setup) -> None:
            policy(ctx)
            setup(ctx)

        # gate's own verdict here is 1 (no baseline: an unmet requirement is a regression)
        gate_ideal = {1, 2, 4} if oname in ("fifo", "symlink-dangling") else {2, 4}
        add(
            cat,
            f"gate-summary-{oname}",
            [*gate_args, "--summary", tgt],
            gate_ideal,
            setup=gs,
            allowed=["@OUT@"],
            root=root,
        )
    png_args = sm("report", "--format", "png,html", "--out", "@OUT@/target")
    add(cat, "report-out-png-full", png_args, {2, 4}, reports="two_runs", setup=out_full, allowed=["@OUT@"], root=True)


def fill(d: Path) -> None:
    i = 0
    try:
        while True:
            with open(d / f"filler{i}", "wb") as fh:
                fh.write(b"\0" * 4096 * 16)
            i += 1
    except OSError:
        pass
    try:
        for j in range(4096):  # use up the inodes too (the mounts cap nr_inodes)
            (d / f"f{j}").write_bytes(b"")
    except OSError:
        pass


def corpus_silent() -> None:
    cat = "silent"
    fx = "two_runs"
    add(cat, "shard-empty", sm("list", "-k", SMALL_K, "--shard", ""), {2})
    add(cat, "shard-space", sm("list", "-k", SMALL_K, "--shard", " "), {2})
    # -k '' selects everything, as pytest's -k "" does (the project's decision)
    add(cat, "keyword-empty", sm("list", "--matrix", M, "-k", ""), {0}, setup=mini_setup(mini_matrix()))
    add(cat, "keyword-space", sm("list", "--matrix", M, "-k", "   "), {2}, setup=mini_setup(mini_matrix()))
    add(cat, "report-format-empty", sm("report", "--format", ""), {2}, reports=fx)
    add(cat, "report-format-comma", sm("report", "--format", ","), {2}, reports=fx)
    add(cat, "history-last-negative", sm("history", "--last", "-3"), {2}, reports=fx)
    add(cat, "history-last-zero", sm("history", "--last", "0"), {2}, reports=fx)
    add(
        cat,
        "merge-exit-status-unknown-shard",
        sm("merge", "@IN@/shard1", "@IN@/shard2", "--exit-status", "nosuchshard=137"),
        {2},
        setup=setup_shards,
    )
    add(cat, "find-links-missing", sm("list", "-k", SMALL_K, "--find-links", "/nonexistent/wheelhouse"), {2})
    add(
        cat,
        "find-links-file",
        sm("list", "-k", SMALL_K, "--find-links", "@IN@/f"),
        {2},
        setup=lambda c: (c.IN / "f").write_text("x"),
    )
    add(
        cat,
        "find-links-bad-wheel-name",
        sm("list", "-k", SMALL_K, "--find-links", "@IN@/wh"),
        {0, 2},
        setup=lambda c: (
            (c.IN / "wh").mkdir(),
            (c.IN / "wh" / "vllm-notaversion.whl").write_text("x"),
            (c.IN / "wh" / "x.whl").write_text("x"),
        ),
    )
    add(
        cat,
        "gpu-h100x0",
        sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6", "--gpu", "h100x0"),
        {2},
    )
    add(
        cat,
        "gpu-l4x4-accepted",
        sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6", "--gpu", "l4x4"),
        {0},
    )
    add(
        cat,
        "gpu-l40sx1-accepted",
        sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6", "--gpu", "l40sx1"),
        {0},
    )
    add(
        cat,
        "gpu-x1",
        sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6", "--gpu", "x1"),
        {2},
    )
    add(
        cat,
        "gpu-huge-count",
        sm(
            "check",
            "--model",
            "gemma-4-E4B-it",
            "--vllm",
            "0.19.0",
            "--transformers",
            "4.57.6",
            "--gpu",
            "l4x" + "9" * 30,
        ),
        {2},
    )
    add(
        cat,
        "gpu-unicode-digit",
        sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6", "--gpu", "l4x\u0663"),
        {0, 2},
    )  # Arabic-Indic 3
    for label, val in [("inf", "inf"), ("nan", "nan"), ("neg-zero", "-0.0"), ("huge", "1e308")]:
        add(
            cat,
            f"overhead_gib-{label}",
            sm("run", "--matrix", M, "--quiet"),
            {0} if label == "neg-zero" else ({0, 2} if label == "huge" else {2}),
            setup=mini_setup(mini_matrix(settings={"overhead_gib": val})),
        )
    for label, val in [("nan", "nan"), ("tiny", "1e-300")]:
        add(
            cat,
            f"gpu_memory_utilization-{label}",
            sm("run", "--matrix", M, "--quiet"),
            {0, 2} if label == "tiny" else {2},
            setup=mini_setup(mini_matrix(settings={"gpu_memory_utilization": val})),
        )
    add(
        cat,
        "kv_reserve_tokens-huge",
        sm("run", "--matrix", M, "--quiet"),
        {0, 2},
        setup=mini_setup(mini_matrix(settings={"kv_reserve_tokens": str(2**62)})),
    )
    add(
        cat,
        "platform-empty",
        sm("run", "--matrix", M, "--quiet"),
        {2},
        setup=mini_setup(mini_matrix(settings={"platform": '""'})),
    )
    add(
        cat,
        "target-count-huge",
        sm("run", "--matrix", M, "--quiet"),
        {0, 2},
        setup=mini_setup(mini_matrix(target_body='gpu = "L4"\ncount = 1000000000\ntp = 1000000000\n')),
    )
    add(cat, "models-include-empty", sm("list", "--matrix", M), {2, 3}, setup=mini_setup(mini_matrix(include="[]")))
    add(
        cat,
        "targets-empty",
        sm("list", "--matrix", M),
        {2, 3},
        setup=mini_setup(mini_matrix().replace('[targets."l4x1"]\ngpu = "L4"\ncount = 1\ntp = 1\n', "[targets]\n")),
    )
    add(cat, "stack-empty", sm("list", "--matrix", M), {2, 3}, setup=mini_setup(mini_matrix(stack="stack = []\n")))
    add(
        cat,
        "exclude-everything",
        sm("list", "--matrix", M),
        {3},
        setup=mini_setup(mini_matrix(stack=MINI_STACK + '\n[[exclude]]\ncells = "*"\nreason = "all"\n')),
    )
    add(cat, "matrix-empty-path", sm("list", "--matrix", ""), {2})
    add(cat, "reports-dir-empty", sm("run", "-k", SMALL_K, "--quiet", "--reports-dir", ""), {2}, allowed=[])
    add(cat, "cache-dir-empty", sm("list", "-k", SMALL_K, "--cache-dir", ""), {2})
    add(
        cat,
        "index-url-empty",
        sm("check", "--model", "gemma-4-E4B-it", "--index-url", ""),
        {2},
        cache="empty",
        max_s=20,
    )
    add(
        cat,
        "index-url-no-scheme",
        sm("check", "--model", "gemma-4-E4B-it", "--index-url", "pypi.org/simple"),
        {2},
        cache="empty",
        max_s=20,
    )
    add(cat, "offline-env-garbage", sm("list", "-k", SMALL_K), {0, 2}, env={"STACKMATRIX_OFFLINE": "maybe"})
    add(cat, "jobs-zero", sm("list", "-k", SMALL_K, "--jobs", "0"), {2})
    add(cat, "jobs-huge", sm("list", "-k", SMALL_K, "--jobs", "1000000"), {0, 2})
    add(cat, "jobs-env-text", sm("list", "-k", SMALL_K), {2}, env={"STACKMATRIX_JOBS": "auto"})
    for label, gpus in (("letters", "a,b"), ("repeat", "0,0"), ("empty", ""), ("negative", "-1"), ("huge", "9" * 40)):
        add(cat, f"gpus-{label}", sm("list", "-k", SMALL_K, "--gpus", gpus), {2})
        add(cat, f"gpus-env-{label}", sm("list", "-k", SMALL_K), {2}, env={"STACKMATRIX_GPUS": gpus})
    for label, retries in (("negative", "-1"), ("huge", "11"), ("float", "1.5"), ("nan", "nan")):
        add(cat, f"retries-{label}", sm("list", "-k", SMALL_K, "--retries", retries), {2})
        add(cat, f"retries-env-{label}", sm("list", "-k", SMALL_K), {2}, env={"STACKMATRIX_RETRIES": retries})
    # a GPU host's flags on a host without NVML: a clear exit (no inventory: 4), never a traceback
    add(
        cat,
        "gpus-without-nvml",
        sm(
            "run",
            "--tier",
            "runtime",
            "--device",
            "gpu",
            "--gpus",
            "0",
            "--only",
            "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1",
        ),
        {0, 4},
        max_s=120,
    )
    add(
        cat,
        "gate-baseline-empty",
        sm("gate", "--policy", "@IN@/p.toml", "--candidate", "vllm=0.19.0,transformers=4.57.6", "--baseline", ""),
        {2},
        setup=lambda c: (c.IN / "p.toml").write_text(policy_text(None)),
    )
    add(cat, "diff-same-run-twice", sm("diff", "@R@/runs/LATEST", "@R@/runs/LATEST"), {0, 2}, reports=fx)
    add(
        cat,
        "policy-require-dup-target-alias",
        sm("gate", "--policy", "@IN@/p.toml", "--candidate", "vllm=0.19.0,transformers=4.57.6"),
        {2},
        setup=lambda c: (c.IN / "p.toml").write_text(
            policy_text(
                None,
                require='[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "l4x1"\n'
                '[[require]]\nmodel = "gemma-4-e4b-it"\ntarget = "L4X1"\n',
            )
        ),
    )
    add(
        cat,
        "policy-target-tp-zero",
        sm("gate", "--policy", "@IN@/p.toml", "--candidate", "vllm=0.19.0,transformers=4.57.6"),
        {2},
        setup=lambda c: (c.IN / "p.toml").write_text(
            policy_text(None, require='[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "l4x0"\n')
        ),
    )
    add(
        cat,
        "override-garbage",
        sm(
            "check",
            "--model",
            "gemma-4-E4B-it",
            "--vllm",
            "0.19.0",
            "--transformers",
            "4.57.6",
            "--override",
            "not a requirement!!",
        ),
        {2},
    )
    add(cat, "triton-image-no-release", sm("list", "-k", SMALL_K, "--triton-image", "x:{variant}"), {2})
    add(cat, "triton-image-attr", sm("list", "-k", SMALL_K, "--triton-image", "{release.__class__}"), {2})


def corpus_kexpr() -> None:
    cat = "kexpr"
    fx = "two_runs"
    long_or = " or ".join(f"word{i}" for i in range(3000)) + " or e4b"
    nested = "(" * 3000 + "e4b" + ")" * 3000
    nots = "not " * 3000 + "e4b"
    nots_odd = "not " * 3001 + "e4b"
    and_chain = " and ".join(["e4b"] * 3000)
    exprs = [
        ("or-3000", long_or, {0}),
        ("and-3000", and_chain, {0}),
        ("parens-3000", nested, {0, 2}),
        ("not-3000", nots, {0, 2}),
        ("not-3001", nots_odd, {0, 2, 3}),
        ("parens-500", "(" * 500 + "e4b" + ")" * 500, {0, 2}),
        ("not-500", "not " * 500 + "e4b", {0, 2}),
        ("open-paren", "(", {2}),
        ("close-paren", ")", {2}),
        ("empty-parens", "()", {2}),
        ("and-alone", "and", {2}),
        ("or-alone", "or", {2}),
        ("not-alone", "not", {2}),
        ("trailing-and", "e4b and", {2}),
        ("two-words", "e4b l4x1", {2}),
        ("unbalanced-open", "((e4b)", {2}),
        ("unbalanced-close", "e4b))", {2}),
        ("upper-AND", "e4b AND l4x1", {0, 2, 3}),
        ("unicode-word", "\uff45\uff14\uff42", {3}),  # fullwidth e4b
        ("glob-star", "*", {3}),
        ("regex-meta", ".*", {3}),
        ("quote", "'e4b'", {3}),
        ("very-long-word", "x" * 100000, {3}),
        ("tab-sep", "e4b\tand\tl4x1", {0}),
        ("newline-sep", "e4b\nand\nl4x1", {0}),
        ("dash-leading", "-e4b", {0, 2, 3}),
    ]
    for i, (label, expr, ideal) in enumerate(exprs):
        if i < 7:  # the big ones over the real matrix's cells, and over stored runs
            add(cat, f"k-{label}-list", sm("list", "-k", expr), ideal)
            add(cat, f"k-{label}-history", sm("history", "-k", expr), ideal, reports=fx)
            if i < 4:
                add(cat, f"k-{label}-report", sm("report", "--format", "md", "-k", expr), ideal, reports=fx)
        else:  # grammar: the parser is shared, the stored-run path is cheap
            add(cat, f"k-{label}-history", sm("history", "-k", expr), ideal, reports=fx)
    # --only
    many_only: list[str] = []
    for i in range(3000):
        many_only += ["--only", f"*word{i}*"]
    onlys = [
        ("star-10000", ["--only", "*" * 10000], {0}),
        ("alternating-star", ["--only", "*a" * 2000 + "*z"], {3}),
        ("bracket-open", ["--only", "[" * 3000], {3}),
        ("bracket-bad-range", ["--only", "[z-a]*"], {3}),
        ("bracket-neg", ["--only", "[!"], {3}),
        ("empty", ["--only", ""], {3}),
        ("many-3000", [*many_only, "--only", "*e4b*l4x1"], {0}),
        ("backslash", ["--only", "\\*"], {3}),
    ]
    for label, extra, ideal in onlys:
        if label in ("many-3000", "alternating-star"):
            add(cat, f"only-{label}-list", sm("list", "-k", SMALL_K, *extra), ideal)
        add(cat, f"only-{label}-history", sm("history", "-k", "e4b", *extra), ideal, reports=fx)
    # --shard
    for label, sh, ideal in [
        ("three-parts", "1/2/3", {2}),
        ("letters", "a/b", {2}),
        ("neg-n", "1/-2", {2}),
        ("neg-i", "-1/2", {2}),
        ("zero-n", "1/0", {2}),
        ("zero-i", "0/1", {2}),
        ("i-gt-n", "3/2", {2}),
        ("huge-n", "1/" + "9" * 40, {0, 2, 3}),
        ("huge-both", "9" * 40 + "/" + "9" * 40, {0, 2, 3}),
        ("unicode-digits", "\uff11/\uff12", {0, 2}),  # fullwidth 1/2
        ("spaces", " 1 / 2 ", {0, 2}),
        ("leading-zero", "01/02", {0}),
        ("nl", "1/2\n", {0, 2}),
        ("fraction", "1.5/2", {2}),
    ]:
        add(cat, f"shard-{label}-list", sm("list", "-k", SMALL_K, "--shard", sh), ideal)


def corpus_blackhole() -> None:
    cat = "blackhole"
    # a real black hole: ideal is a bounded, one-line exit 4; the timeout here is long to measure how long it takes
    T = 120.0
    lst = sm("list", "-k", SMALL_K)
    chk = sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6")
    for name, argv, host in (
        ("blackhole-list", lst, "@BH@"),
        ("blackhole-check", chk, "@BH@"),
        ("backlog-full-list", lst, "@BL@"),
        ("drip-list", lst, "@DRIP@"),
    ):
        add(
            cat,
            name,
            [*argv, "--index-url", f"http://127.0.0.1:{host}/simple"],
            {4},
            cache="empty",
            timeout=T,
            max_s=60,
        )
    add(
        cat,
        "blackhole-offline",
        [*lst, "--offline", "--index-url", "http://127.0.0.1:@BH@/simple"],
        {4},
        cache="empty",
        timeout=30,
        max_s=10,
    )
    add(
        cat,
        "blackhole-warm-run",
        sm("run", "-k", SMALL_K, "--quiet", "--index-url", "http://127.0.0.1:@BH@/simple"),
        {4},
        timeout=T,
        max_s=60,
        note="warm wheel cache, listing from the black hole",
    )
    # malformed responses without credentials: time to exit
    for mode in (
        "404",
        "500",
        "html_garbage",
        "json_invalid",
        "json_file_nokeys",
        "json_mirror",
        "json_wheels_badrange",
        "redirect_loop",
        "reset",
    ):
        ideal = {0} if mode in ("json_mirror", "html_mirror") else ({0, 4} if mode == "json_nohash" else {4})
        add(cat, f"malformed-{mode}-check", [*chk, "--index-url", idx(mode, False)], ideal, max_s=20)


def corpus_merge() -> None:
    cat = "merge"
    add(cat, "baseline-ok", sm("merge", "@IN@/shard1", "@IN@/shard2"), {0}, setup=setup_shards)

    def shard1_run(ctx: Ctx) -> Path:
        setup_shards(ctx)
        return sorted((ctx.IN / "shard1" / "runs").iterdir())[-1]

    def mod(fn: Callable[[Path, Ctx], object]) -> Callable[[Ctx], None]:
        def f(ctx: Ctx) -> None:
            fn(shard1_run(ctx), ctx)

        return f

    edit_json = edit_json_file

    def plan_add(cell_id: str) -> Callable[[Path, Ctx], None]:
        def f(d: Path, ctx: Ctx) -> None:
            for sd in (d, sorted((ctx.IN / "shard2" / "runs").iterdir())[-1]):

                def ch(p: dict[str, Any], first: bool = sd == d) -> dict[str, Any]:
                    p["selection"][cell_id] = {"kind": "vllm", "model": "m", "target": "t"}
                    if first:
                        p["cells"].append(cell_id)
                    return p

                edit_json(sd / "plan.json", ch)

        return f

    def setmeta(**kv: Any) -> Callable[[Path, Ctx], None]:
        return lambda d, ctx: edit_meta(d, **kv)

    def delplan(key: str) -> Callable[[Path, Ctx], None]:
        return lambda d, ctx: edit_json(d / "plan.json", lambda p: {k: v for k, v in p.items() if k != key})

    def legacy(fn: Callable[[Path, Ctx], object]) -> Callable[[Path, Ctx], None]:
        """On a run from before the journal (cells/<cell id>.json files): those runs are still read."""

        def f(d: Path, ctx: Ctx) -> None:
            to_legacy(d)
            fn(d, ctx)

        return f

    def cell_is_fifo(d: Path, ctx: Ctx) -> None:
        legacy_cell(d).unlink()
        os.mkfifo(d / "cells" / "fifo.json")

    def cell_symlink_secret(d: Path, ctx: Ctx) -> None:
        (ctx.IN / "secret.txt").write_text(f'{{"token": "{SECRET_FILE}"}}')
        os.symlink(ctx.IN / "secret.txt", d / "cells" / "zz-link.json")

    def cells_dir_is_file(d: Path, ctx: Ctx) -> None:
        shutil.rmtree(d / "cells")
        (d / "cells").write_text("x")

    def planted_cell(garbage: bool) -> Callable[[Path, Ctx], None]:
        """A cells/ file planted in a run that has a journal: garbage, or another verdict for a journaled cell."""

        def f(d: Path, ctx: Ctx) -> None:
            (d / "cells").mkdir()
            raw = jlines(d)[0]
            cell = json.loads(raw)["cell"]
            data = os.urandom(300) if garbage else json.dumps({**json.loads(raw), "verdict": "serves"}).encode()
            (d / "cells" / f"{cell}.json").write_bytes(data)

        return f

    cases: list[tuple[str, Callable[[Path, Ctx], object], set[int]]] = [
        ("legacy-baseline", legacy(lambda d, c: None), {0}),
        ("legacy-cell-garbage", legacy(lambda d, c: legacy_cell(d).write_bytes(os.urandom(500))), {2}),
        ("legacy-cell-missing-probes", legacy(lambda d, c: edit_json(legacy_cell(d), without("probes"))), {2}),
        (
            "legacy-cell-id-mismatch",
            legacy(lambda d, c: edit_json(legacy_cell(d), lambda x: {**x, "cell": "../../../../ESC_CELLID"})),
            {2},
        ),
        # a non-regular entry in cells/ may be skipped (its cell then counts as missing) or refused
        ("legacy-cell-is-fifo", legacy(cell_is_fifo), {0, 2}),  # skipped: 1 of the 2 records run.json counts
        ("legacy-cell-symlink-secret", legacy(cell_symlink_secret), {0, 2}),
        ("legacy-cells-dir-is-file", legacy(cells_dir_is_file), {0, 2}),
        # every record run.json counts lost: exit 2 naming where they were (issue 22), never a merged not-run
        ("legacy-cells-dir-missing", legacy(lambda d, c: shutil.rmtree(d / "cells")), {2}),
        ("planted-cell-garbage-beside-journal", planted_cell(True), {0, 2}),
        ("planted-cell-other-verdict-beside-journal", planted_cell(False), {0}),
        ("plan-cell-dotdot", plan_add("../../../../../ESC_PLAN"), {2}),
        ("plan-cell-dotdot-deep", plan_add("../../../../../../../../ESC_PLAN"), {2}),
        ("plan-cell-slash", plan_add("a/b/c"), {2}),
        ("plan-cell-empty", plan_add(""), {2}),
        ("plan-cell-long", plan_add("x" * 400), {2}),
        ("plan-missing-selection", delplan("selection"), {2}),
        ("plan-missing-cells", delplan("cells"), {2}),
        ("plan-list", lambda d, c: (d / "plan.json").write_text("[]"), {2}),
        ("plan-null", lambda d, c: (d / "plan.json").write_text("null"), {0, 2}),
        ("plan-shard-bad", lambda d, c: edit_json(d / "plan.json", lambda p: {**p, "shard": "x/y"}), {2}),
        ("plan-shard-int", lambda d, c: edit_json(d / "plan.json", lambda p: {**p, "shard": 7}), {2}),
        ("plan-selection-list", lambda d, c: edit_json(d / "plan.json", lambda p: {**p, "selection": ["a"]}), {2}),
        (
            "plan-selection-mismatch",
            lambda d, c: edit_json(d / "plan.json", lambda p: {**p, "selection": {"x": {}}}),
            {2},
        ),
        ("run-id-dotdot", setmeta(run_id="../../ESC_RID"), {0, 2}),
        ("run-id-dotdot-deep", setmeta(run_id="../../../../../../ESC_RID"), {0, 2}),
        ("run-id-int", setmeta(run_id=5), {0, 2}),
        ("run-id-null", setmeta(run_id=None), {0, 2}),
        ("run-id-missing", setmeta(run_id=DEL), {2}),
        ("run-matrix-hash-missing", setmeta(matrix_hash=DEL), {2}),
        ("run-tier-mismatch", setmeta(tier="runtime"), {2}),
        ("run-exit-code-string", setmeta(exit_code="abc"), {0, 2}),
        ("run-exit-code-130", setmeta(exit_code=130, status="interrupted"), {0}),
        ("run-status-list", setmeta(status=["x"]), {0, 2}),
        ("run-started-int", setmeta(started=5), {0, 2}),
        ("run-finished-missing", setmeta(finished=DEL, exit_code=DEL, status="running"), {0}),
        ("run-json-list", lambda d, c: (d / "run.json").write_text("[]"), {2}),
        ("run-json-missing", lambda d, c: (d / "run.json").unlink(), {2}),
    ]
    for label, fn, ideal in cases:
        lost = label in ("legacy-cell-is-fifo", "legacy-cells-dir-is-file", "legacy-cells-dir-missing")
        names = LOST if lost else CELLFILE if label.startswith(("legacy-cell", "planted-cell")) else ""
        add(cat, label, sm("merge", "@IN@/shard1", "@IN@/shard2"), ideal, setup=mod(fn), names=names)
    # every hostile journal in shard 1: merge reads and checks each record before it writes anything
    for jd in journal_damages():
        # a shard whose journal lost every record its run.json says it wrote: exit 2 naming the journal, never
        # a merged run that passes the lost cells off as not-run (issue 22); a second record of a cell is no
        # record its shard could have written: exit 2 naming its line (issue 24)
        repeated = jd.name.startswith("duplicated")
        add(
            cat,
            f"journal-{jd.name}",
            sm("merge", "@IN@/shard1", "@IN@/shard2"),
            {2} if jd.empty or repeated else set(jd.ideal),
            setup=mod(jd.apply),
            names=JFILE if jd.empty else r"journal\.jsonl:\d+" if repeated else jd.names,
        )
    # after a merge: report the merged run (the cell ids of the plan become file names there too)
    py = shlex.quote(PY)
    add(
        cat,
        "plan-cell-dotdot-then-report",
        [
            "@SH@",
            f"{py} -m stackmatrix merge @IN@/shard1 @IN@/shard2 --reports-dir @R@; "
            f"{py} -m stackmatrix report --format all --reports-dir @R@",
        ],
        {2, 3},
        setup=mod(plan_add("../../../../../ESC_PLAN")),
        auto_flags=False,
        timeout=90,
        note="the exit code is report's: 3 when the merge (rightly) stored nothing",
    )
    add(cat, "shard-given-twice", sm("merge", "@IN@/shard1", "@IN@/shard1"), {2}, setup=setup_shards)
    add(cat, "shard-is-file", sm("merge", "@IN@/f"), {2}, setup=lambda c: (c.IN / "f").write_text("x"))
    add(cat, "shard-missing", sm("merge", "@IN@/nope"), {2})
    add(cat, "shard-empty-dir", sm("merge", "@IN@/e"), {2}, setup=lambda c: (c.IN / "e").mkdir())
    add(cat, "one-shard-only", sm("merge", "@IN@/shard1"), {0}, setup=setup_shards)
    add(cat, "shard-is-reports-dir-itself", sm("merge", "@R@"), {0, 2}, reports="shard1")
    add(cat, "shard-symlink-loop", sm("merge", "@IN@/loop"), {2}, setup=lambda c: os.symlink("loop", c.IN / "loop"))
    add(
        cat,
        "exit-status-unknown",
        sm("merge", "@IN@/shard1", "@IN@/shard2", "--exit-status", "shard9=137"),
        {2},
        setup=setup_shards,
    )


class _Del:
    pass


DEL = _Del()


# What a resumed run must hold: every planned cell, none twice (``exact``), and the run complete. Exit 100 if not.
VERIFY_RESUMED = """
import json, pathlib, sys
reports, exact = pathlib.Path(sys.argv[1]), sys.argv[2] == "exact"
d = sorted((reports / "runs").iterdir())[-1]
planned = json.loads((d / "plan.json").read_text())["cells"]
got = [json.loads(ln)["cell"] for ln in (d / "journal.jsonl").read_bytes().split(b"\\n") if ln.strip()]
meta = json.loads((d / "run.json").read_text())
problems = []
if sorted(set(got)) != sorted(planned):
    problems.append(f"cells {sorted(set(got) ^ set(planned))} lost or extra")
if exact and len(got) != len(set(got)):
    problems.append(f"{len(got) - len(set(got))} cells recorded twice")
if (meta.get("status"), meta.get("exit_code")) != ("complete", 0):
    problems.append(f"status {meta.get('status')} exit {meta.get('exit_code')}")
if problems:
    print("audit: resumed run " + d.name + ": " + "; ".join(problems), file=sys.stderr)
    sys.exit(100)
"""
# The store's run files (names and contents): a command that must write nothing leaves this unchanged.
STORE_DIGEST = "(ls -a @R@/runs; find @R@/runs -type f -name '*.json*' -exec sha256sum {} + | sort) 2>&1 | sha256sum"


def sm_cmd(*args: str) -> str:
    """A stackmatrix command line for a shell case (``@C@`` and ``@R@`` as its cache and reports dirs)."""
    common = ["--cache-dir", "@C@"] if args[0] in COMMON_CMDS else []
    return shlex.join([PY, "-m", "stackmatrix", *args, *common, "--reports-dir", "@R@"])


def unchanged_store(*args: str) -> list[str]:
    """A shell case: the command's exit code, or 100 when it changed the store's run files."""
    return [
        "@SH@",
        f"a=$( {STORE_DIGEST} ); {sm_cmd(*args)}; r=$?; b=$( {STORE_DIGEST} ); "
        'if [ "$a" != "$b" ]; then echo "audit: the command changed the store" >&2; exit 100; fi; exit $r',
    ]


def resumed_ok(*args: str, exact: bool = True) -> list[str]:
    """A shell case: resume, then check the run (VERIFY_RESUMED): its exit code, or 100."""
    check = shlex.join([PY, "-c", VERIFY_RESUMED, "@R@", "exact" if exact else "set"])
    return ["@SH@", f"{sm_cmd(*args)}; r=$?; if [ $r -ne 0 ]; then exit $r; fi; {check}"]


def corpus_resume() -> None:
    """``run --resume [RUN]``: bad refs, a run.json whose args, matrix, status, purpose, pid, pid_start or boot_id
    are missing or mistyped, a damaged plan.json, every hostile journal; and the readers of those run.json fields."""
    cat = "resume"

    def crashed(fn: Callable[[Path, Ctx], object] | None = None, keep: int = 3) -> Callable[[Ctx], None]:
        """The store's newest run left behind by a kill -9 (3 of its 4 cells journaled), then ``fn`` on it."""

        def f(ctx: Ctx) -> None:
            d = fixture_run_dir("two_runs", ctx.R)
            make_crashed(d, keep)
            if fn is not None:
                fn(d, ctx)

        return f

    def meta(**kv: Any) -> Callable[[Path, Ctx], None]:
        return lambda d, ctx: edit_meta(d, **kv)

    def args_set(**kv: Any) -> Callable[[Path, Ctx], None]:
        def f(d: Path, ctx: Ctx) -> None:
            edit_json_file(d / "run.json", lambda m: {**m, "args": {**m["args"], **kv}})

        return f

    resume = sm("run", "--resume", "--quiet")
    by_ref = sm("run", "--resume=@R@/runs/LATEST", "--quiet")
    RUNJSON = r"run\.json"

    def case(
        name: str,
        setup: Callable[[Ctx], object] | None,
        ideal: set[int],
        args: list[str] = resume,
        names: str = "",
        **kw: Any,
    ) -> None:
        add(cat, name, args, ideal, reports="two_runs", setup=setup, names=names, **kw)

    # the good path, checked: every planned cell once, the run complete
    case("baseline", crashed(), {0}, resumed_ok("run", "--resume", "--quiet"), auto_flags=False)
    case("baseline-by-ref", crashed(), {0}, resumed_ok("run", "--resume=@R@/runs/LATEST"), auto_flags=False)
    case("baseline-no-cell-done", crashed(keep=0), {0}, resumed_ok("run", "--resume", "--quiet"), auto_flags=False)
    case("with-fresh", crashed(), {0}, sm("run", "--resume", "--quiet", "--fresh"))
    # the command line's selection does not change a resumed run's: it uses the recorded one, or refuses
    case("with-other-k", crashed(), {0, 2}, sm("run", "--resume", "--quiet", "-k", "triton"))
    case("with-shard", crashed(), {0, 2}, sm("run", "--resume", "--quiet", "--shard", "1/2"))
    # --plan with --resume prints what is left and writes nothing
    case("with-plan", crashed(), {0}, unchanged_store("run", "--resume", "--plan"), auto_flags=False)

    # RUN refs
    def fifo(c: Ctx) -> None:
        os.mkfifo(c.IN / "fifo")

    def empty_dir(c: Ctx) -> None:
        (c.IN / "empty").mkdir()

    def loop(c: Ctx) -> None:
        os.symlink("loop", c.IN / "loop")

    for label, ref, pre in [
        ("dotdot", "../x", None),
        ("dotdot-deep", "../../../../../../../../ESC", None),
        ("root", "/", None),
        ("fifo", "@IN@/fifo", fifo),
        ("dir-without-run-json", "@IN@/empty", empty_dir),
        ("symlink-loop", "@IN@/loop", loop),
        ("journal-file", "@R@/runs/LATEST/journal.jsonl", None),
        ("runs-dir", "@R@/runs", None),
        ("glob", "*", None),
        ("ambiguous-prefix", "20", None),
        ("long", "9" * 5000, None),
        ("newline", "x\ny", None),
    ]:

        def s(c: Ctx, pre: Callable[[Ctx], None] | None = pre) -> None:
            crashed()(c)
            if pre:
                pre(c)

        case(f"ref-{label}", s, {2}, sm("run", f"--resume={ref}", "--quiet"))
    # an empty RUN is what a bare --resume gives (argparse's const): the newest run that did not complete
    case("ref-empty-crashed-store", crashed(), {0}, sm("run", "--resume=", "--quiet"), note="= bare --resume")
    case("ref-empty-complete-store", None, {3}, sm("run", "--resume=", "--quiet"))

    def outside(c: Ctx) -> None:
        crashed()(c)
        shutil.copytree(fixture_run_dir("two_runs", c.R), c.IN / "ext" / "run")

    case(
        "ref-run-dir-outside-store",
        outside,
        {0, 2},
        sm("run", "--resume=@IN@/ext/run", "--quiet"),
        allowed=["@IN@/ext"],
        note="a run directory given by path is resumed in place (or refused)",
    )

    # run.json args: missing or mistyped (a hand-edited run.json is input: exit 2 naming it)
    for label, fn in [
        ("missing", meta(args=DEL)),
        ("null", meta(args=None)),
        ("list", meta(args=[["keyword", "x"]])),
        ("string", meta(args="-k e4b")),
        ("empty-object", meta(args={})),
        ("only-string", args_set(only="abc")),
        ("only-string-star", args_set(only="*")),
        ("only-ints", args_set(only=[1, 2])),
        ("tier-bogus", args_set(tier="bogus")),
        ("tier-int", args_set(tier=5)),
        ("tier-runtime", args_set(tier="runtime")),
        ("keyword-int", args_set(keyword=5)),
        ("keyword-list", args_set(keyword=["e4b"])),
        ("keyword-dict", args_set(keyword={"a": 1})),
        ("shard-int", args_set(shard=7)),
        ("shard-bad", args_set(shard="x/y")),
        ("shard-other", args_set(shard="1/2")),
        ("override-string", args_set(override="vllm==0.19.0")),
        ("override-ints", args_set(override=[1])),
        ("resolve-bogus", args_set(resolve="bogus")),
        ("full-class-string", args_set(full_class="yes")),
    ]:
        case(f"args-{label}", crashed(fn), {2}, names=RUNJSON if label in ("missing", "null", "list", "string") else "")
    case("args-unknown-key", crashed(args_set(surprise=[1, {"x": None}])), {0})

    # run.json matrix: the file the run was made from
    def matrix_to(kind: str) -> Callable[[Path, Ctx], None]:
        def f(d: Path, ctx: Ctx) -> None:
            target = ctx.IN / "matrix.toml"
            if kind == "secret":
                target.write_text(f'[settings]\npython = "3.12"\ntoken = "{SECRET_FILE}"\n[[stack]]\nkind = 5\n')
            elif kind != "missing":
                make_bad(target, kind)
            edit_meta(d, matrix=str(target))

        return f

    for kind in ("fifo", "missing", "dir", "devzero", "binary", "secret"):
        case(f"matrix-{kind}", crashed(matrix_to(kind)), {2}, names=r"matrix\.toml")
    case("matrix-null", crashed(meta(matrix=None)), {2}, names=RUNJSON)
    case("matrix-empty-string", crashed(meta(matrix="")), {2}, names=RUNJSON)
    case("matrix-int", crashed(meta(matrix=5)), {2}, by_ref, names=RUNJSON)
    case("matrix-hash-changed", crashed(meta(matrix_hash="0000000000000000")), {2}, names=RUNJSON)
    case("matrix-hash-missing", crashed(meta(matrix_hash=DEL)), {2}, names=RUNJSON)

    # plan.json: what the run planned before its first probe
    def plan_edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Ctx], None]:
        return lambda d, ctx: edit_json_file(d / "plan.json", change)

    def first_planned(p: dict[str, Any]) -> str:
        return str(p["cells"][0])

    for label, fn in [
        ("missing", lambda d, c: (d / "plan.json").unlink()),
        ("dir", lambda d, c: make_bad(d / "plan.json", "dir", "json")),
        ("fifo", lambda d, c: make_bad(d / "plan.json", "fifo", "json")),
        ("binary", lambda d, c: make_bad(d / "plan.json", "binary", "json")),
        ("deepnest", lambda d, c: make_bad(d / "plan.json", "deepnest", "json")),
        ("list", lambda d, c: (d / "plan.json").write_text("[]")),
        ("null", lambda d, c: (d / "plan.json").write_text("null")),
        ("cells-dotdot", plan_edit(lambda p: {**p, "cells": ["../../../../ESC_PLAN", *p["cells"]]})),
        ("cells-one-removed", plan_edit(lambda p: {**p, "cells": p["cells"][1:]})),
        ("cells-string", plan_edit(lambda p: {**p, "cells": "abc"})),
        (
            "selection-dotdot",
            plan_edit(lambda p: {**p, "selection": {**p["selection"], "../../ESC": {"kind": "vllm"}}}),
        ),
    ]:
        case(f"plan-{label}", crashed(fn), {2}, names=r"plan\.json")
    # plan.json fields nothing reads back: the cache-hit sources (``cached``), ``done``, the fingerprints
    for label, fn in [
        ("cached-dotdot", plan_edit(lambda p: {**p, "cached": {c: "../../../../../ESC_RUN" for c in p["cells"]}})),
        ("cached-abs", plan_edit(lambda p: {**p, "cached": {first_planned(p): "/etc"}})),
        ("cached-list", plan_edit(lambda p: {**p, "cached": ["../x"]})),
        ("done-garbage", plan_edit(lambda p: {**p, "done": {"../x": 5}})),
        ("fingerprints-garbage", plan_edit(lambda p: {**p, "fingerprints": {"../x": ["y"]}})),
    ]:
        case(f"plan-{label}", crashed(fn), {0, 2}, names=r"plan\.json")

    # status and purpose: what may be resumed. A complete run named by ref is resumed with nothing to probe
    # (pipeline/resume.py refuses only a running run and a non-matrix one): 0, every cell still once; by default only
    # runs that did not complete are candidates: 3 when there is none.
    case("complete-by-ref", None, {0}, resumed_ok("run", "--resume=@R@/runs/LATEST"), auto_flags=False)
    case("complete-default", None, {3})
    for status in ("interrupted", "failed", "index-unreachable", "crashed"):
        case(f"status-{status}", crashed(meta(status=status)), {0})
    case("status-bogus", crashed(meta(status="weird")), {0, 2}, by_ref, names=RUNJSON)
    case("status-int", crashed(meta(status=5)), {2}, by_ref, names=RUNJSON)
    case("status-list-default", crashed(meta(status=["running"])), {3})
    for purpose in ("gate", "merge", DEL, 7):
        label = "missing" if purpose is DEL else str(purpose)
        case(f"purpose-{label}", crashed(meta(purpose=purpose)), {2}, by_ref, names=RUNJSON)

    # pid, pid_start, boot_id: whether the process that wrote a ``running`` run is still there
    def alive_pid1(d: Path, ctx: Ctx) -> None:
        edit_meta(d, pid=1, pid_start=proc_start(1), boot_id=boot_id())

    def other_boot(heartbeat: str) -> Callable[[Path, Ctx], None]:
        def f(d: Path, ctx: Ctx) -> None:
            edit_meta(d, boot_id="another-machine", pid=1, pid_start=DEL)
            beat = d / ".alive"
            if heartbeat == "fresh":
                beat.touch()
            elif heartbeat == "stale":
                beat.touch()
                os.utime(beat, (time.time() - 3600, time.time() - 3600))
            elif heartbeat in ("fifo", "symlink_loop", "dir"):
                make_bad(beat, heartbeat)

        return f

    case("running-alive-pid1", crashed(alive_pid1), {2}, by_ref, names=RUNJSON)
    case("running-other-boot-fresh-heartbeat", crashed(other_boot("fresh")), {2}, by_ref, names=RUNJSON)
    case("running-other-boot-stale-heartbeat", crashed(other_boot("stale")), {0}, by_ref)
    case("running-other-boot-no-heartbeat", crashed(other_boot("none")), {0}, by_ref)
    case("running-other-boot-heartbeat-loop", crashed(other_boot("symlink_loop")), {0}, by_ref)
    case("running-other-boot-heartbeat-fifo", crashed(other_boot("fifo")), {0, 2}, by_ref, names=RUNJSON)
    case("running-recycled-pid1", crashed(meta(pid=1, pid_start=0)), {0}, by_ref)
    metas: list[tuple[str, dict[str, Any], set[int]]] = [
        ("pid-huge", {"pid": 10**30}, {0}),
        ("pid-negative", {"pid": -1}, {0}),
        ("pid-zero", {"pid": 0}, {0}),
        ("pid-null", {"pid": None}, {0}),
        ("pid-string", {"pid": "1234"}, {2}),
        ("pid-bool", {"pid": True}, {2}),
        ("pid-float", {"pid": 1.5}, {2}),
        ("pid-list", {"pid": [1]}, {2}),
        ("pid-start-string", {"pid_start": "x"}, {2}),
        ("pid-start-float", {"pid_start": 1e300}, {2}),
        ("boot-id-int", {"boot_id": 5}, {2}),
        ("boot-id-object", {"boot_id": {"a": 1}}, {2}),
        ("boot-id-huge", {"boot_id": "b" * 100_000}, {0}),
    ]
    for label, kv, ideal in metas:
        names = RUNJSON if ideal == {2} else ""
        case(f"meta-{label}", crashed(meta(**kv)), ideal, by_ref, names=names)
        if ideal == {2}:  # not a candidate for a bare --resume (a damaged run is skipped): nothing to resume
            case(f"meta-{label}-default", crashed(meta(**kv)), {3})
        if label in ("pid-string", "boot-id-int", "pid-start-string", "pid-huge"):
            case(f"meta-{label}-history", crashed(meta(**kv)), ideal | {0}, sm("history"), names=names)
            case(
                f"meta-{label}-report",
                crashed(meta(**kv)),
                ideal,
                sm("report", "@R@/runs/LATEST", "--format", "md,json"),
                names=names,
            )

    # every hostile journal in the run being resumed (line 2 of its 3; the empty ones leave all 4 to probe)
    for jd in journal_damages():
        case(f"journal-{jd.name}", crashed(jd.apply), set(jd.ideal), names=jd.names)
    case(
        "journal-torn-last-line-verified",
        crashed(jtail(lambda lines: lines[0][: len(lines[0]) // 2])),
        {0},
        resumed_ok("run", "--resume", "--quiet"),
        auto_flags=False,
        note="the torn line is cut, the resumed cells appended after it, none lost or twice",
    )
    case(
        "journal-duplicated-line-verified",
        crashed(lambda d, c: jwrite(d, [*jlines(d), jlines(d)[0]])),
        {0},
        resumed_ok("run", "--resume", "--quiet", exact=False),
        auto_flags=False,
    )

    def journal_outside(d: Path, ctx: Ctx) -> None:
        """The journal a symlink to a valid journal outside the store: an append must not follow it."""
        (ctx.IN / "outside.jsonl").write_bytes((d / JOURNAL).read_bytes())
        (d / JOURNAL).unlink()
        os.symlink(ctx.IN / "outside.jsonl", d / JOURNAL)

    case("journal-symlink-outside-store", crashed(journal_outside), {0, 2}, names=JFILE)

    def journal_outside_torn(d: Path, ctx: Ctx) -> None:
        (ctx.IN / "outside.jsonl").write_bytes((d / JOURNAL).read_bytes() + b'{"torn": ')
        (d / JOURNAL).unlink()
        os.symlink(ctx.IN / "outside.jsonl", d / JOURNAL)

    case("journal-symlink-outside-store-torn", crashed(journal_outside_torn), {0, 2}, names=JFILE)

    def cells_outside(d: Path, ctx: Ctx) -> None:
        """A planted cells/ symlink to a directory of the user's holding a file named like a temporary one: the
        run's ending sweeps its own leftovers, never through a link out of the store."""
        (ctx.IN / "elsewhere").mkdir()
        (ctx.IN / "elsewhere" / ".notes.tmp").write_text("mine")
        os.symlink(ctx.IN / "elsewhere", d / "cells")

    case("cells-dir-symlink-outside-store", crashed(cells_outside), {0, 2}, names=r"cells")

    def heartbeat_outside(existing: bool) -> Callable[[Path, Ctx], None]:
        """A planted .alive symlink out of the store: the heartbeat must not touch (or create) what it names."""

        def f(d: Path, ctx: Ctx) -> None:
            target = ctx.IN / "precious.txt"
            if existing:
                target.write_text("mine")
                os.utime(target, (1_000_000_000, 1_000_000_000))
            os.symlink(target, d / ".alive")

        return f

    case("heartbeat-symlink-outside-store", crashed(heartbeat_outside(True)), {0, 2}, names=r"\.alive")
    case("heartbeat-dangling-symlink-outside-store", crashed(heartbeat_outside(False)), {0, 2}, names=r"\.alive")

    # a read-only store: the resume cannot record anything
    def ro_store(ctx: Ctx) -> None:
        ctx.mount(ctx.R, "size=8m")
        for p in (FIX / "two_runs").iterdir():
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, ctx.R / p.name)
        make_crashed(fixture_run_dir("two_runs", ctx.R))
        ctx.remount_ro(ctx.R)

    add(cat, "store-read-only", resume, {2, 4}, setup=ro_store, root=True)


def corpus_plan() -> None:
    """``run --plan`` and ``list --plan`` (they print the plan and write no run) over hostile stores: the index a
    directory, a FIFO, garbage, planted rows; runs/ damaged; and the cache hits of a run over a planted index."""
    cat = "plan"
    run_plan = ["run", "--plan", "-k", SMALL_K]
    list_plan = ["list", "--plan", "-k", SMALL_K]
    run_small = sm("run", "-k", SMALL_K, "--quiet")
    IDX = r"index\.sqlite"

    add(cat, "run-plan-baseline", unchanged_store(*run_plan), {0}, reports="two_runs", auto_flags=False)
    add(cat, "run-plan-fresh", unchanged_store(*run_plan, "--fresh"), {0}, reports="two_runs", auto_flags=False)
    add(cat, "list-plan-baseline", unchanged_store(*list_plan), {0}, reports="two_runs", auto_flags=False)
    for label, args in (("run", run_plan), ("list", list_plan)):
        add(
            cat,
            f"{label}-plan-no-store",
            [
                "@SH@",
                f"{sm_cmd(*args)}; r=$?; if [ -e @R@ ]; then echo 'audit: created @R@' >&2; exit 100; fi; exit $r",
            ],
            {0},
            auto_flags=False,
        )

    def index(kind: str) -> Callable[[Ctx], None]:
        def f(ctx: Ctx) -> None:
            p = ctx.R / "index.sqlite"
            if kind == "symlink-input":  # replacing the link is fine; writing through it is not
                (ctx.IN / "precious.db").write_text("not yours")
                p.unlink()
                os.symlink(ctx.IN / "precious.db", p)
            elif kind == "future-schema":
                db = sqlite3.connect(p)
                db.execute("PRAGMA user_version = 999")
                db.commit()
                db.close()
            elif kind == "garbage-sqlite-header":
                p.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
            else:
                make_bad(p, kind, "json")

        return f

    for kind, ideal in [
        ("dir", {0, 2}),
        ("fifo", {0}),
        ("binary", {0}),
        ("empty", {0}),
        ("garbage-sqlite-header", {0}),
        ("symlink_loop", {0, 2}),
        ("dangling_symlink", {0}),
        ("symlink-input", {0}),
        ("future-schema", {0}),
    ]:
        for label, args in (("run", run_plan), ("list", list_plan)):
            add(cat, f"index-{kind}-{label}-plan", sm(*args), ideal, reports="two_runs", setup=index(kind), names=IDX)
        if kind in ("dir", "fifo", "binary", "future-schema"):
            add(cat, f"index-{kind}-run", run_small, ideal, reports="two_runs", setup=index(kind), names=IDX)

    # planted rows in a well-formed index (it is derived data: whatever it says, the run files decide)
    def planted(change: Callable[[sqlite3.Connection, str, str], None]) -> Callable[[Ctx], None]:
        def f(ctx: Ctx) -> None:
            runs = sorted((ctx.R / "runs").iterdir())
            db = sqlite3.connect(ctx.R / "index.sqlite")
            try:
                change(db, runs[0].name, runs[-1].name)
                db.commit()
            finally:
                db.close()

        return f

    def copy_run_rows(db: sqlite3.Connection, src: str, new_id: str) -> None:
        run_cols = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
        cell_cols = [r[1] for r in db.execute("PRAGMA table_info(cells)")]
        for table, cols in (("runs", run_cols), ("cells", cell_cols)):
            marks = ",".join("?" * len(cols))
            for row in db.execute(f"SELECT {','.join(cols)} FROM {table} WHERE run_id = ?", (src,)).fetchall():
                values = [new_id if c == "run_id" else v for c, v in zip(cols, row, strict=True)]
                db.execute(f"INSERT INTO {table} ({','.join(cols)}) VALUES ({marks})", values)

    # a run the index invents, outside the store, whose journal holds a record with a secret: never read
    plant_id = "../" * 8 + "in/plant"

    def plant_outside(db: sqlite3.Connection, first: str, last: str) -> None:
        copy_run_rows(db, first, plant_id)
        db.execute("UPDATE runs SET run_id = run_id WHERE run_id = ?", (plant_id,))

    def plant_files(ctx: Ctx) -> None:
        src = fixture_run_dir("two_runs", ctx.R)
        (ctx.IN / "plant").mkdir()
        lines = [json.dumps({**json.loads(ln), "token": SECRET_FILE}).encode() for ln in jlines(src)]
        jwrite(ctx.IN / "plant", lines)
        shutil.copy2(src / "run.json", ctx.IN / "plant" / "run.json")
        planted(plant_outside)(ctx)

    for label, change in [
        ("offset-text", lambda db, f, last: db.execute("UPDATE cells SET journal_offset = 'abc'")),
        ("offset-negative", lambda db, f, last: db.execute("UPDATE cells SET journal_offset = -100000")),
        ("length-huge", lambda db, f, last: db.execute("UPDATE cells SET journal_length = 99999999999")),
        ("offset-float", lambda db, f, last: db.execute("UPDATE cells SET journal_offset = 1.5")),
        ("offset-blob", lambda db, f, last: db.execute("UPDATE cells SET journal_offset = x'00ff'")),
        ("cell-id-dotdot", lambda db, f, last: db.execute("UPDATE cells SET cell_id = '../../ESC_' || cell_id")),
        ("run-id-dotdot", lambda db, f, last: copy_run_rows(db, f, "../../../../ESC_IDX")),
    ]:
        add(cat, f"index-planted-{label}-run", run_small, {0}, reports="two_runs", setup=planted(change), names=IDX)
        if label in ("offset-text", "cell-id-dotdot", "run-id-dotdot"):
            add(cat, f"index-planted-{label}-run-plan", sm(*run_plan), {0}, reports="two_runs", setup=planted(change))
    add(cat, "index-planted-run-outside-store-run", run_small, {0}, reports="two_runs", setup=plant_files)

    # runs/ itself damaged
    def runs_is_file(ctx: Ctx) -> None:
        shutil.rmtree(ctx.R / "runs")
        (ctx.R / "runs").write_text("x")

    def runs_entry_fifo(ctx: Ctx) -> None:
        os.mkfifo(ctx.R / "runs" / "20991231T000000.000000Z-ffffff")

    def runs_entry_loop(ctx: Ctx) -> None:
        os.symlink("20991231T000000.000000Z-eeeeee", ctx.R / "runs" / "20991231T000000.000000Z-eeeeee")

    for label, fn, ideal in [
        ("runs-is-file", runs_is_file, {0, 2}),
        ("runs-entry-fifo", runs_entry_fifo, {0}),
        ("runs-entry-symlink-loop", runs_entry_loop, {0}),
    ]:
        for cmd, args in (("run", run_plan), ("list", list_plan)):
            add(cat, f"{label}-{cmd}-plan", sm(*args), ideal, reports="two_runs", setup=fn, names=r"runs")

    # a stored run with a damaged journal or run.json: left out of the index (a warning); the plan goes on
    def latest(fn: Callable[[Path, Ctx], object]) -> Callable[[Ctx], object]:
        return lambda ctx: fn(fixture_run_dir("two_runs", ctx.R), ctx)

    stored: list[tuple[str, Callable[[Path, Ctx], object]]] = [
        ("journal-line-not-json", jline(2, b"this is not json {")),
        ("journal-fifo", jreplace("fifo")),
        ("journal-deep", jline(2, b"[" * 5000 + b"]" * 5000)),
        ("run-json-pid-string", lambda d, c: edit_meta(d, pid="1234", status="running")),
        ("run-json-boot-id-int", lambda d, c: edit_meta(d, boot_id=5)),
        (
            "plan-json-cached-dotdot",
            lambda d, c: edit_json_file(
                d / "plan.json", lambda p: {**p, "cached": {k: "../../../../ESC_RUN" for k in p["cells"]}}
            ),
        ),
    ]
    for label, damage_fn in stored:
        add(
            cat,
            f"store-{label}-run-plan",
            unchanged_store(*run_plan),
            {0},
            reports="two_runs",
            setup=latest(damage_fn),
            auto_flags=False,
        )
        add(cat, f"store-{label}-list-plan", sm(*list_plan), {0}, reports="two_runs", setup=latest(damage_fn))
        add(cat, f"store-{label}-run", run_small, {0}, reports="two_runs", setup=latest(damage_fn))


def corpus_selftest() -> None:
    """Checks of the harness's own detectors (run with --only selftest; not part of the default corpus)."""
    cat = "selftest"
    add(cat, "escape-cwd", ["@SH@", "touch @W@/cwd/ESC"], {0}, auto_flags=False, note="must flag ESCAPE")
    add(
        cat,
        "escape-input-modified",
        ["@SH@", "echo x >> @IN@/f"],
        {0},
        auto_flags=False,
        setup=lambda c: (c.IN / "f").write_text("a"),
        note="must flag ESCAPE",
    )
    add(
        cat,
        "escape-input-removed",
        ["@SH@", "rm @IN@/f"],
        {0},
        auto_flags=False,
        setup=lambda c: (c.IN / "f").write_text("a"),
        note="must flag ESCAPE",
    )
    add(
        cat,
        "no-escape-reports",
        ["@SH@", "mkdir -p @R@/x && touch @R@/x/y @C@/z"],
        {0},
        auto_flags=False,
        note="must PASS",
    )
    add(cat, "secret-stdout", ["@SH@", f"echo {SECRET_PW}"], {0}, auto_flags=False, note="must flag SECRET")
    add(
        cat,
        "secret-in-reports",
        ["@SH@", f"mkdir -p @R@ && echo {SECRET_TOKEN} > @R@/f"],
        {0},
        auto_flags=False,
        note="must flag SECRET",
    )
    add(
        cat,
        "traceback",
        ["@SH@", f"{shlex.quote(PY)} -c 'raise ValueError(1)'"],
        {1},
        auto_flags=False,
        note="must flag TRACEBACK",
    )
    add(cat, "hang", ["@SH@", "sleep 30"], {0}, auto_flags=False, timeout=2, note="must flag HANG")
    add(
        cat,
        "multiline",
        ["@SH@", "printf 'a\\nb\\nc\\nd\\n' >&2; exit 2"],
        {2},
        auto_flags=False,
        note="must flag MULTILINE_ERR",
    )


def corpus_registry() -> None:
    """``image facts`` against a registry that answers badly: one line, the exit owed, nothing written outside the
    cache, no secret shown, never a hang (a dripping registry or a black hole is cut off)."""
    cat = "registry"
    for mode, code in REGISTRY_MODES.items():
        add(cat, mode, sm("image", "facts", f"127.0.0.1:@PORT@/{mode}/x:t"), {code}, cache="empty", max_s=60)
    add(
        cat,
        "registry-auth-in-errors",
        sm("image", "facts", "127.0.0.1:@PORT@/token_loop/x:t", "--registry-auth", f"user:{SECRET_PW}"),
        {2},
        cache="empty",
    )
    for name, host in (("blackhole", "@BH@"), ("drip", "@DRIP@"), ("backlog-full", "@BL@")):
        add(
            cat,
            name,
            sm("image", "facts", f"127.0.0.1:{host}/x/y:t", "--read-timeout", "2", "--connect-timeout", "2"),
            {4},
            cache="empty",
            timeout=120,
            max_s=30,
        )
    add(cat, "offline-nothing-cached", sm("image", "facts", "127.0.0.1:@PORT@/x/y:t", "--offline"), {4})
    for bad in ("", "UPPER/x", "a b", "x@sha256:zz", "../../etc"):
        add(cat, f"ref-{bad or 'empty'}", sm("image", "facts", bad), {2})
    add(cat, "auth-no-colon", sm("image", "facts", "127.0.0.1:@PORT@/x/y:t", "--registry-auth", SECRET_PW), {2})


def corpus_slurm() -> None:
    """The slurm executor pointed at no cluster (SLURM_CONF naming nothing), hostile Slurm options, ``collect``
    of runs that were never submitted, and ``worker`` on a submission whose tasks.json is damaged or not a file:
    one line, exit 2 or 3, never a hang (a FIFO is not opened for a blocking read)."""
    cat = "slurm"
    nocluster = {"SLURM_CONF": "@IN@/no-slurm.conf"}
    add(cat, "slurm-conf-missing", sm("run", "-k", SMALL_K, "--executor", "slurm"), {2}, env=nocluster)
    for label, flags in [
        ("executor-unknown", ["--executor", "k8s"]),
        ("args-not-an-option", ["--slurm-args", "constraint=a100"]),
        ("args-unclosed-quote", ["--slurm-args=--comment='x"]),
        ("args-newline", ["--slurm-args=--comment=a\n--wrap=id"]),
        ("tasks-zero", ["--slurm-tasks", "0"]),
        ("tasks-huge", ["--slurm-tasks", "9" * 40]),
        ("max-running-negative", ["--slurm-max-running=-2"]),
        ("poll-nan", ["--slurm-poll", "nan"]),
        ("partition-blank", ["--slurm-partition", " "]),
    ]:
        add(cat, label, sm("run", "-k", SMALL_K, "--executor", "slurm", *flags), {2})
    add(cat, "env-tasks-bad", sm("run", "-k", SMALL_K), {2}, env={"STACKMATRIX_SLURM_TASKS": "four"})
    for kind in ("fifo", "dir", "binary", "nonutf8", "hugeline", "dangling_symlink"):
        add(
            cat,
            f"config-{kind}",
            sm("list", "-k", SMALL_K),
            {0, 2} if kind == "hugeline" else {2},  # a 16 MB comment is valid TOML
            env={"STACKMATRIX_CONFIG": "@IN@/site.toml"},
            setup=lambda c, kind=kind: make_bad(c.IN / "site.toml", kind),
        )
    add(
        cat,
        "config-secret-not-echoed",
        sm("list", "-k", SMALL_K, "--config", "@IN@/site.toml"),
        {2},
        setup=lambda c: (c.IN / "site.toml").write_text(f'registry_auth = ["{SECRET_PW}"]\n'),
    )
    add(cat, "collect-nothing", sm("collect"), {3})
    add(cat, "collect-not-submitted", sm("collect", "@R@/runs/LATEST"), {2}, reports="two_runs")
    add(cat, "collect-unknown-run", sm("collect", "20990101"), {2}, reports="two_runs")
    cell = "vllm-0.19.0-tf4.57.6__gemma-4-e4b-it__l4x1"
    good = {
        "tasks": [{"cells": [[cell, "f", 1.0]], "gpus": 0, "cpus": 1, "mem_mb": 1024, "seconds": 60.0}],
        "arrays": [{"offset": 0, "count": 1, "job": "7"}],
    }

    def submission(kind: str, data: object = None) -> Callable[[Ctx], None]:
        def f(ctx: Ctx) -> None:
            d = fixture_run_dir("two_runs", ctx.R) / "slurm" / "1"
            d.mkdir(parents=True)
            if kind == "json":
                (d / "tasks.json").write_text(json.dumps(data))
            else:
                make_bad(d / "tasks.json", kind, "json")

        return f

    worker = ["worker", "@R@/runs/LATEST/slurm/1", "--task"]
    add(cat, "worker-no-submission", sm(*worker, "0"), {2}, reports="two_runs")
    for kind in ("fifo", "dir", "binary", "empty", "dangling_symlink"):
        add(cat, f"worker-tasks-{kind}", sm(*worker, "0"), {2}, reports="two_runs", setup=submission(kind))
    add(cat, "worker-task-out-of-range", sm(*worker, "5"), {2}, reports="two_runs", setup=submission("json", good))
    add(cat, "worker-task-negative", sm(*worker, "-1"), {2}, reports="two_runs", setup=submission("json", good))
    stranger = json.loads(json.dumps(good))
    stranger["tasks"][0]["cells"][0][0] = "vllm-9.9.9-tf9.9.9__gemma-4-e4b-it__l4x1"
    add(cat, "worker-cell-not-in-matrix", sm(*worker, "0"), {2}, reports="two_runs", setup=submission("json", stranger))
    escape = json.loads(json.dumps(good))
    escape["tasks"][0]["cells"][0][0] = "../../../../tmp/x"
    add(cat, "worker-cell-escapes", sm(*worker, "0"), {2}, reports="two_runs", setup=submission("json", escape))


def corpus_answers() -> None:
    """``advise`` and ``bisect`` with hostile specs, models, policies and axes: exit 2 naming the flag or the file,
    never a traceback or a hang."""
    cat = "answers"
    e4b = ["--model", "gemma-4-E4B-it"]
    for label, args in [
        ("advise-current-garbage", ["advise", "--current", "triton", *e4b]),
        ("advise-current-unknown-key", ["advise", "--current", "cuda=12.8", *e4b]),
        ("advise-current-release-bad", ["advise", "--current", "triton=26.99", *e4b]),
        ("advise-current-version-bad", ["advise", "--current", "vllm=0.19.0.dev0+evil", *e4b]),
        ("advise-no-model", ["advise", "--current", "triton=26.03"]),
        ("advise-gpu-bad", ["advise", "--current", "triton=26.03", *e4b, "--gpu", "../../x"]),
        ("advise-best-zero", ["advise", "--current", "triton=26.03", *e4b, "--best", "0"]),
        ("bisect-axis-bad", ["bisect", "--axis", "cuda", *e4b]),
        ("bisect-pinned-axis", ["bisect", "--axis", "triton", "--triton", "26.03", *e4b]),
        ("bisect-rule-bad", ["bisect", "--axis", "vllm", "--transformers", "@yesterday", *e4b]),
        ("bisect-model-bad", ["bisect", "--axis", "vllm", "--model", "../../etc/passwd"]),
    ]:
        add(cat, label, sm(*args), {2})
    for kind in ("fifo", "dir", "binary", "symlink_loop"):
        add(
            cat,
            f"advise-policy-{kind}",
            sm("advise", "--policy", "@IN@/p.toml"),
            {2},
            setup=lambda c, kind=kind: make_bad(c.IN / "p.toml", kind),
        )


def corpus_content() -> None:
    """Hostile content, a second process, root (issue 24): a special file as an output, links planted in a shared
    store, records edited by hand in a journal."""
    cat = "content"

    def out_chardev(ctx: Ctx) -> None:  # what /dev/null is, made where the case may write
        ctx.OUT.mkdir(parents=True, exist_ok=True)
        os.mknod(ctx.OUT / "target", stat.S_IFCHR | 0o666, os.makedev(1, 3))

    def out_fifo(ctx: Ctx) -> None:
        ctx.OUT.mkdir(parents=True, exist_ok=True)
        os.mkfifo(ctx.OUT / "target")

    diff_out = sm("diff", "--output", "@OUT@/target")
    add(cat, "diff-output-chardev", diff_out, 0, reports="two_runs", setup=out_chardev, allowed=["@OUT@"], root=True)
    add(cat, "diff-output-fifo-no-reader", diff_out, 2, reports="two_runs", setup=out_fifo, allowed=["@OUT@"])

    def planted(name: str) -> Callable[[Ctx], None]:
        def setup(ctx: Ctx) -> None:
            elsewhere = ctx.OUT / "elsewhere"
            elsewhere.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(ctx.R / name):
                shutil.rmtree(ctx.R / name)
            (ctx.R / name).symlink_to(elsewhere, target_is_directory=True)

        return setup

    for name, args in (
        ("rendered", sm("report", "--format", "md")),
        ("latest", sm("run", "-k", SMALL_K, "--quiet")),
        ("runs", sm("run", "-k", SMALL_K, "--quiet")),
    ):
        add(
            cat, f"planted-{name}-link", args, 2, reports="two_runs", setup=planted(name), allowed=["@OUT@"], names=name
        )

    def forged(ctx: Ctx) -> None:  # the first record's verdict edited to serves: its probes say otherwise
        journal = fixture_run_dir("two_runs", ctx.R) / "journal.jsonl"
        lines = journal.read_bytes().splitlines(keepends=True)
        record = json.loads(lines[0])
        record["verdict"], record["reason"] = "serves", None
        lines[0] = json.dumps(record).encode() + b"\n"
        journal.write_bytes(b"".join(lines))

    # what an index hands over: bombs capped (exit 4 naming the URL), redirects refused, hostile text dropped
    chk = sm("check", "--model", "gemma-4-E4B-it", "--vllm", "0.19.0", "--transformers", "4.57.6")
    for mode, ideal in (
        ("json_gzip_bomb", 4),
        ("json_huge", 4),
        ("redirect_link_local", 4),
        ("redirect_plain_offloopback", 4),
        ("json_hostile_text", 0),
        ("json_wheels_cdbomb", 4),
        ("json_wheels_inflatebomb", 4),
    ):
        cache = "warm" if mode == "json_hostile_text" else "empty"  # the mirror's wheels: the warm cache has them
        add(cat, f"index-{mode}", [*chk, "--index-url", idx(mode, False)], ideal, cache=cache, max_s=30)

    for label, args in (("history", sm("history")), ("report", sm("report", "--format", "md"))):
        add(cat, f"forged-serves-{label}", args, 0, reports="two_runs", setup=forged)  # shown, warned, not reused
    add(cat, "forged-serves-merge", sm("merge", "@R@"), 2, reports="two_runs", setup=forged, names="journal.jsonl:1")

    # a second process: one resume held still (SIGSTOP) once it holds the run's lock, a second resume of that run
    # refused (exit 2) naming it; the first then finishes the run with every planned cell once (exit 0 when all hold)
    resume = sm_cmd("run", "--resume", "--quiet")
    check = shlex.join([PY, "-c", VERIFY_RESUMED, "@R@", "exact"])
    two_resumes = (
        f"{resume} & a=$!; d=$(ls -d @R@/runs/*/ | sort | tail -1); "
        'while [ "$(cat "${d}.lock" 2>/dev/null)" != "$a" ]; do kill -0 $a 2>/dev/null || '
        '{ echo "audit: the first resume ended before it was held" >&2; exit 101; }; sleep 0.01; done; '
        f"kill -STOP $a; e=$({resume} 2>&1 >/dev/null); b=$?; kill -CONT $a; wait $a; ra=$?; "
        'echo "$e" >&2; case "$e" in *"held by pid $a"*) ;; '
        '*) echo "audit: not refused naming $a" >&2; exit 102;; esac; '
        '[ $b -eq 2 ] || { echo "audit: the second resume exited $b" >&2; exit 103; }; '
        f"[ $ra -eq 0 ] || exit $ra; {check} || exit 100"
    )

    def crashed(ctx: Ctx) -> None:
        make_crashed(fixture_run_dir("two_runs", ctx.R))

    add(cat, "resume-twice-at-once", ["@SH@", two_resumes], 0, reports="two_runs", setup=crashed)
    # four runs into a store that has no index yet: each is stored and indexed (the schema made once, busy waited)
    runs = " ".join(f"{sm_cmd('run', '-k', SMALL_K, '--quiet')} & p{i}=$!;" for i in range(4))
    waits = " ".join(f"wait $p{i} || f=$((f + 1));" for i in range(4))
    four = (
        f'f=0; {runs} {waits} [ $f -eq 0 ] || {{ echo "audit: $f of 4 runs failed" >&2; exit 100; }}; '
        f'{sm_cmd("history")} | grep -q "cells over 4 runs;" || {{ echo "audit: history lacks a run" >&2; exit 101; }}'
    )
    add(cat, "four-runs-into-a-new-store", ["@SH@", four], 0, timeout=300)


def build_corpus(selftest: bool = False) -> None:
    if selftest:
        corpus_selftest()
        return
    corpus_ids()
    corpus_creds()
    corpus_unreadable()
    corpus_versions()
    corpus_writefault()
    corpus_silent()
    corpus_kexpr()
    corpus_blackhole()
    corpus_registry()
    corpus_slurm()
    corpus_answers()
    corpus_merge()
    corpus_resume()
    corpus_plan()
    corpus_content()


# ---------------------------------------------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Result:
    case: Case
    rc: int | None
    secs: float
    flags: list[str]
    verdict: str
    cmd: str
    stdout: str
    stderr: str
    signature: dict[str, str] | None = None
    escapes: list[str] = field(default_factory=list)
    secret_hits: list[str] = field(default_factory=list)
    orphan: list[str] = field(default_factory=list)
    reason: str = ""  # why a case is NOT-RUN


def not_run(case: Case, reason: str) -> Result:
    return Result(case, None, 0.0, [], "NOT-RUN", "", "", "", reason=reason)


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int]]:
    out: dict[str, tuple[int, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def under(p: str, roots: list[Path]) -> bool:
    for r in roots:
        rs = str(r)
        if p == rs or p.startswith(rs.rstrip("/") + "/"):
            return True
    return False


TB_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')


def tb_signature(text: str) -> dict[str, str] | None:
    if "Traceback (most recent call last)" not in text:
        return None
    lines = text.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)"))
    frames: list[tuple[str, str, str, str]] = []
    exc = ""
    i = start + 1
    while i < len(lines):
        m = TB_FRAME.match(lines[i])
        if m:
            src = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith("    ") else ""
            frames.append((m["file"], m["line"], m["func"], src))
            i += 2 if src else 1
            continue
        ln = lines[i]
        if ln and not ln.startswith(" ") and not ln.startswith("During handling") and not ln.startswith("The above"):
            exc = ln
            break
        i += 1
    own = [f for f in frames if "/stackmatrix/" in f[0]]
    inner = frames[-1] if frames else ("", "", "", "")
    mine = own[-1] if own else inner
    etype = exc.split(":", 1)[0]

    def fmt(f: tuple[str, str, str, str]) -> str:
        fn = f[0].split("/src/", 1)[-1] if "/src/" in f[0] else f[0]
        return f"{fn}:{f[1]} in {f[2]}: {f[3]}"

    return {
        "exc_type": etype,
        "exception": exc[:300],
        "stackmatrix_frame": fmt(mine),
        "innermost_frame": fmt(inner),
        "key": f"{etype} @ {mine[0].split('/src/', 1)[-1]}:{mine[2]}: {mine[3]}",
    }


def set_limits() -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))


def run_case(case: Case, keep: bool = True) -> Result:
    if case.root and not IS_ROOT:
        return not_run(case, NEEDS_ROOT)
    box = RUNS / case.cat / case.name
    if box.exists():
        unmount_under(box)
        shutil.rmtree(box, ignore_errors=True)
    w = box / "w"
    ctx = Ctx(
        case=case,
        box=box,
        w=w,
        R=w / "d1/d2/d3/d4/d5/d6/reports",
        C=w / "cache",
        IN=w / "in",
        OUT=w / "out",
        HOME=w / "home",
        CWD=w / "cwd",
    )
    (box / "_h").mkdir(parents=True)
    for d in (ctx.IN, ctx.HOME, ctx.CWD, ctx.R.parent):
        d.mkdir(parents=True, exist_ok=True)
    if case.cache == "warm":
        subprocess.run(["cp", "-al", str(WARM), str(ctx.C)], check=True)
    elif case.cache == "empty":
        ctx.C.mkdir()
    if case.reports:
        copy_reports(FIX / case.reports, ctx.R)
    try:
        return _run_case(case, ctx)
    except NotRunError as exc:  # the setup found it cannot make this case here
        return not_run(case, str(exc))
    finally:
        for m in reversed(ctx.mounts):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        if not keep:
            shutil.rmtree(box, ignore_errors=True)


def _run_case(case: Case, ctx: Ctx) -> Result:
    if case.setup:
        case.setup(ctx)
    latest_run = ""
    if ctx.R.is_dir() and (ctx.R / "runs").is_dir():
        with contextlib.suppress(IndexError, OSError):
            latest_run = str(sorted((ctx.R / "runs").iterdir())[-1])
    args = []
    for a in case.args:
        a = ctx.sub(a)
        if latest_run:
            a = a.replace(str(ctx.R / "runs" / "LATEST"), latest_run)
        args.append(a)
    if args and args[0] == "@SH@":
        argv = ["/bin/sh", "-c", args[1]]
    else:
        sub = args[0] if args else ""
        flags: list[str] = []
        if case.auto_flags:
            if sub in COMMON_CMDS and "--cache-dir" not in args:
                flags += ["--cache-dir", str(ctx.C)]
            if (sub in COMMON_CMDS or sub in REPORTS_ONLY) and "--reports-dir" not in args and sub != "tiny":
                flags += ["--reports-dir", str(ctx.R)]
        argv = [PY, "-m", "stackmatrix", *args, *flags]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(ctx.HOME),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLCONFIGDIR": str(ctx.box / "_h" / "mpl"),
        "HF_TOKEN": SECRET_ENV,
        "SSL_CERT_FILE": os.environ.get("SSL_CERT_FILE", ""),
        "TMPDIR": str(ctx.box / "_h" / "tmp"),
    }
    (ctx.box / "_h" / "tmp").mkdir(exist_ok=True)
    if not env["SSL_CERT_FILE"]:
        env.pop("SSL_CERT_FILE")
    env.update({k: ctx.sub(v) for k, v in case.env.items()})
    allowed = [ctx.R, ctx.C] + [Path(ctx.sub(a)) for a in case.allowed]
    before = snapshot(ctx.w)
    out_p, err_p = ctx.box / "_h" / "stdout", ctx.box / "_h" / "stderr"
    t0 = time.monotonic()
    hang = False
    with open(out_p, "wb") as fo, open(err_p, "wb") as fe:
        limited = ["prlimit", f"--as={MEM_LIMIT}", "--", *argv] if PRLIMIT else argv
        proc = subprocess.Popen(
            limited,
            cwd=ctx.CWD,
            env=env,
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=None if PRLIMIT else set_limits,
        )
        try:
            rc: int | None = proc.wait(timeout=case.timeout)
        except subprocess.TimeoutExpired:
            hang = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    secs = time.monotonic() - t0
    # orphans of a forked child may linger: kill the whole group regardless
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    stdout = out_p.read_bytes().decode("utf-8", "replace")
    stderr = err_p.read_bytes().decode("utf-8", "replace")
    after = snapshot(ctx.w)
    flags_: list[str] = []
    if "Traceback (most recent call last)" in stdout + stderr:
        flags_.append("TRACEBACK")
    crash = CRASH_RE.search(stderr)
    crash_sig = None
    if crash:
        flags_.append("CRASH")
        text = ""
        if crash["path"]:
            with contextlib.suppress(OSError):
                text = Path(crash["path"]).read_text(errors="replace")
        crash_sig = tb_signature(text) or {
            "exc_type": crash["type"],
            "exception": f"{crash['type']}: {crash['msg']}",
            "stackmatrix_frame": "(no crash log)",
            "innermost_frame": "(no crash log)",
            "key": f"{crash['type']} @ (no crash log)",
        }
        crash_sig["crash_log"] = crash["path"] or ""
    if hang:
        flags_.append("HANG")
    escapes = []
    for p, st in after.items():
        if before.get(p) != st and not under(p, allowed):
            if stat.S_ISDIR(st[0]) and p in before:
                continue  # a directory's mtime changes when an allowed child changes
            escapes.append(p)
    # removed: a file of the user's deleted (or a symlink followed to delete what it points at)
    escapes += [f"{p} (removed)" for p in before if p not in after and not under(p, allowed)]
    escapes = sorted(escapes)
    # a new thing inside an allowed dir that is not new itself is fine; a changed pre-existing input is not
    if escapes:
        flags_.append("ESCAPE")
    hits = []
    for s in SECRETS:
        if s in stdout or s in stderr:
            hits.append(f"<output>:{s}")
    warm_inodes = WARM_INODES
    for p, st in after.items():
        if not stat.S_ISREG(st[0]) or before.get(p) == st:
            continue
        if (st[3]) in warm_inodes:
            continue
        try:
            with open(p, "rb") as fh:
                data = fh.read(64 << 20)
        except OSError:
            continue
        for s in SECRETS:
            if s.encode() in data:
                hits.append(f"{p}:{s}")
    if hits:
        flags_.append("SECRET")
    err_lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if rc in (2, 4) and len(err_lines) > 3:
        flags_.append("MULTILINE_ERR")
    if rc == 2 and case.names and not re.search(case.names, stderr):
        flags_.append("UNNAMED")
    orphan = []
    if rc not in (0, None) and case.args and case.args[0] in ("merge", "run", "gate", "@SH@"):
        for p in after:
            # a new run, or one the command rewrote (``run --resume`` continues a stored run in place)
            if p.endswith("/run.json") and before.get(p) != after[p] and under(p, [ctx.R]):
                try:
                    meta = json.loads(Path(p).read_text())
                except (OSError, ValueError):
                    continue
                is_merge = "merge" in (case.args[0], case.args[1][:200] if len(case.args) > 1 else "")
                complete = isinstance(meta, dict) and meta.get("status") == "complete" and meta.get("exit_code") == 0
                # a failed merge must leave no run at all; a failed run/gate must not claim a clean finish
                if complete or (is_merge and case.args[0] == "merge" and p not in before):
                    status = meta.get("status") if isinstance(meta, dict) else "?"
                    orphan.append(f"{p} (status {status})")
        if orphan:
            flags_.append("ORPHAN_RUN")
    leftovers = [str(p) for p in (ctx.box / "_h" / "tmp").rglob("*")]
    if leftovers:
        flags_.append("TMP_LEFTOVER")  # informative: files left in $TMPDIR (outside reports/cache)
        escapes += [f"(TMPDIR) {p}" for p in leftovers[:20]]
    if case.max_s is not None and not hang and secs > case.max_s:
        flags_.append("SLOW")
    ok = rc in case.ideal and not (set(flags_) & ALWAYS_FAIL)
    res = Result(
        case,
        rc,
        secs,
        flags_,
        "PASS" if ok else "FAIL",
        shlex.join(argv),
        stdout,
        stderr,
        tb_signature(stderr) or tb_signature(stdout) or crash_sig,
        escapes,
        hits,
        orphan,
    )
    (ctx.box / "_h" / "cmd.sh").write_text(
        f"#!/bin/sh\n# rerun {case.id} in its (already used) sandbox\ncd {shlex.quote(str(ctx.CWD))} && exec env -i "
        + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        + " "
        + res.cmd
        + "\n"
    )
    (ctx.box / "_h" / "result.json").write_text(json.dumps(result_json(res), indent=1))
    return res


def result_json(r: Result) -> dict[str, Any]:
    return {
        "category": r.case.cat,
        "case": r.case.name,
        "rc": r.rc,
        "ideal": sorted(r.case.ideal),
        "names": r.case.names,
        "secs": round(r.secs, 2),
        "flags": r.flags,
        "verdict": r.verdict,
        "cmd": r.cmd,
        "harness": f"cd {shlex.quote(str(REPO))} && "
        + shlex.join([PY, "-m", "tests.audit.hostile", "--workdir", str(WORK), "--case", r.case.id, "--show"]),
        "signature": r.signature,
        "escapes": r.escapes[:50],
        "secret_hits": r.secret_hits[:50],
        "orphan_runs": r.orphan,
        "stderr_tail": r.stderr[-3000:],
        "stdout_tail": r.stdout[-1500:],
        "note": r.case.note,
        "reason": r.reason,
    }


WARM_INODES: set[int] = set()


def unmount_under(root: Path) -> None:
    try:
        mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    rs = str(root)
    for m in sorted((m for m in mounts if m == rs or m.startswith(rs.rstrip("/") + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------
def print_tables(results: list[Result], show: bool) -> tuple[dict[str, Counter[str]], Counter[str]]:
    """The per-case table (with stderr tails of failures when ``show``), then the per-category and per-flag counts."""
    w = max(len(r.case.name) for r in results) if results else 10
    print(f"{'category':<12} {'case':<{w}} {'rc':>4} {'secs':>7}  {'ideal':<10} {'result':<7} flags")
    for r in results:
        ideal = ",".join(str(i) for i in sorted(r.case.ideal))
        extra = f"({r.reason})" if r.verdict == "NOT-RUN" else " ".join(r.flags)
        print(f"{r.case.cat:<12} {r.case.name:<{w}} {r.rc!s:>4} {r.secs:7.2f}  {ideal:<10} {r.verdict:<7} {extra}")
        if show and r.verdict == "FAIL":
            print("    cmd: " + r.cmd)
            for line in r.stderr.strip().splitlines()[-8:] or ["<no stderr>"]:
                print("    | " + line[:300])
            for e in r.escapes[:5]:
                print("    escape: " + e)
            for hit in r.secret_hits[:5]:
                print("    secret: " + hit)
    print("\n== per category ==")
    by_cat: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        by_cat[r.case.cat]["cases"] += 1
        by_cat[r.case.cat][r.verdict] += 1
        for f in r.flags:
            by_cat[r.case.cat][f] += 1
        if r.verdict == "FAIL" and not (set(r.flags) & ALWAYS_FAIL):
            by_cat[r.case.cat]["WRONG_EXIT"] += 1
    head = f"{'category':<12} {'cases':>5} {'PASS':>5} {'FAIL':>5} {'NOT-RUN':>7} "
    print(head + " ".join(f"{f:>{len(f)}}" for f in FLAG_NAMES))
    tot: Counter[str] = Counter()

    def row(name: str, cnt: Counter[str]) -> str:
        counts = f"{cnt['cases']:>5} {cnt['PASS']:>5} {cnt['FAIL']:>5} {cnt['NOT-RUN']:>7} "
        return f"{name:<12} {counts}" + " ".join(f"{cnt[f]:>{len(f)}}" for f in FLAG_NAMES)

    for cat in sorted(by_cat):
        tot.update(by_cat[cat])
        print(row(cat, by_cat[cat]))
    print(row("TOTAL", tot))
    print("\n== per flag ==")
    for f in FLAG_NAMES:
        print(f"{f:<14} {tot[f]}")
    return by_cat, tot


def print_findings(results: list[Result]) -> dict[str, list[Result]]:
    """Distinct traceback/crash signatures, failures without one, NOT-RUN cases and time to exit (blackhole)."""
    sigs: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.signature:
            sigs[r.signature["key"]].append(r)
    print(f"\n== distinct failure signatures: tracebacks and crash logs ({len(sigs)}) ==")
    for rs in sorted(sigs.values(), key=lambda rs: -len(rs)):
        sig = rs[0].signature or {}
        print(
            f"* {sig.get('exception')}\n    raised: {sig.get('innermost_frame')}\n"
            f"    stackmatrix: {sig.get('stackmatrix_frame')}\n"
            f"    {len(rs)} cases, e.g. {rs[0].case.id}: {rs[0].cmd[:400]}"
        )
    print("\n== failures without a traceback (wrong exit code, hang, escape, ...) ==")
    for r in results:
        if r.verdict == "FAIL" and not r.signature:
            out_last = r.stdout.strip().splitlines()[0] if r.stdout.strip() else "<no output>"
            first = (r.stderr.strip().splitlines() or [out_last])[-1]
            flags = " ".join(r.flags) or "WRONG_EXIT"
            print(f"* {r.case.id}: rc={r.rc} ideal={sorted(r.case.ideal)} {flags} {r.secs:.0f}s | {first[:200]}")
    skipped = [r for r in results if r.verdict == "NOT-RUN"]
    if skipped:
        print(f"\n== NOT-RUN ({len(skipped)}): not judged, neither PASS nor FAIL ==")
        for r in skipped:
            print(f"* {r.case.id}: {r.reason}")
    slowest = sorted(
        (r for r in results if r.case.cat == "blackhole" and r.verdict != "NOT-RUN"), key=lambda r: -r.secs
    )
    if slowest:
        print("\n== time to exit against hostile indexes (blackhole) ==")
        for r in slowest:
            print(f"  {r.case.name:<40} rc={r.rc!s:<4} {r.secs:6.1f}s {' '.join(r.flags)}")
    return sigs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.audit.hostile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", action="append", default=[], help="run only this category (repeatable)")
    ap.add_argument("--case", action="append", default=[], help="glob over 'category/case' (repeatable)")
    ap.add_argument("--json", dest="json_out", default=None, help="write every result as JSON here")
    ap.add_argument("--jobs", type=int, default=max(4, (os.cpu_count() or 2) + 2))
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--show", action="store_true", help="print stderr/stdout tails of failing cases")
    ap.add_argument("--rebuild-fixtures", action="store_true", help="rebuild the fixtures even if up to date")
    ap.add_argument("--clean", action="store_true", help="delete each case's sandbox after it ran")
    ap.add_argument(
        "--workdir",
        default=None,
        help="work directory: warm cache, fixtures, sandboxes (default: a fresh temporary one, kept afterwards)",
    )
    a = ap.parse_args(argv)
    if a.jobs < 1:
        ap.error("--jobs must be at least 1")

    build_corpus(selftest=a.only == ["selftest"])
    cats = sorted({c.cat for c in CASES})
    for o in a.only:
        if o not in cats:
            ap.error(f"unknown category {o!r}; one of {', '.join(cats)} (selftest only alone)")
    todo = [
        c
        for c in CASES
        if (not a.only or c.cat in a.only) and (not a.case or any(fnmatch.fnmatchcase(c.id, g) for g in a.case))
    ]
    if a.list:
        for c in todo:
            print(f"{c.id:70} ideal={sorted(c.ideal)}{'  [root]' if c.root else ''}")
        print(f"{len(todo)} cases", file=sys.stderr)
        return 0
    if not todo:
        ap.error("no case matches --only/--case")
    global CODE_STATE
    work = use_workdir(a.workdir)
    print(f"work directory: {work}", file=sys.stderr)
    if not IS_ROOT:
        n_root = sum(c.root for c in todo)
        print(f"warning: not root; {n_root} cases that mount a tmpfs will be NOT-RUN", file=sys.stderr)
    CODE_STATE = code_state()
    print(f"code under test: {CODE_STATE}", file=sys.stderr)
    try:
        return _main(a, todo)
    finally:
        unmount_under(RUNS)
        print(f"work directory (kept): {work}", file=sys.stderr)


def _main(a: argparse.Namespace, todo: list[Case]) -> int:
    build_fixtures(bool(a.rebuild_fixtures))
    for dirpath, _, files in os.walk(WARM):
        for n in files:
            WARM_INODES.add(os.lstat(os.path.join(dirpath, n)).st_ino)
    start_servers()
    if a.case or a.only:
        for c in todo:
            b = RUNS / c.cat / c.name
            if b.exists():
                unmount_under(b)
    else:
        unmount_under(RUNS)
        shutil.rmtree(RUNS, ignore_errors=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    # long cases first so they overlap with the rest
    todo.sort(key=lambda c: -c.timeout)
    results: list[Result] = []
    t0 = time.monotonic()
    lock = threading.Lock()

    def one(c: Case) -> Result:
        try:
            r = run_case(c, keep=not a.clean)
        except Exception as exc:  # harness error: report it as such
            r = Result(c, None, 0.0, ["HARNESS_ERROR"], "FAIL", "", "", f"{type(exc).__name__}: {exc}")
        with lock:
            results.append(r)
            extra = f"({r.reason})" if r.verdict == "NOT-RUN" else ",".join(r.flags)
            line = f"[{len(results):3}/{len(todo)}] {r.verdict} {c.id} rc={r.rc} {r.secs:.1f}s {extra}"
            print(line, file=sys.stderr, flush=True)
        return r

    slow = [c for c in todo if c.timeout > DEFAULT_TIMEOUT]
    fast = [c for c in todo if c.timeout <= DEFAULT_TIMEOUT]
    try:
        with ThreadPoolExecutor(max(1, len(slow))) as spool, ThreadPoolExecutor(a.jobs) as pool:
            futs = [spool.submit(one, c) for c in slow] + [pool.submit(one, c) for c in fast]
            for f in futs:
                f.result()
    finally:
        unmount_under(RUNS)
    wall = time.monotonic() - t0
    order = {c.id: i for i, c in enumerate(CASES)}
    results.sort(key=lambda r: order[r.case.id])

    by_cat, tot = print_tables(results, bool(a.show))
    sigs = print_findings(results)
    print(f"\ncode under test: {CODE_STATE}")
    not_run_note = f", {tot['NOT-RUN']} NOT-RUN" if tot["NOT-RUN"] else ""
    print(
        f"{len(results)} cases ({tot['PASS']} PASS, {tot['FAIL']} FAIL{not_run_note}) in {wall:.0f}s (jobs {a.jobs}); "
        f"sandboxes under {RUNS}/<category>/<case>/ (_h/cmd.sh reruns one)"
    )
    if a.json_out:
        Path(a.json_out).write_text(
            json.dumps(
                {
                    "results": [result_json(r) for r in results],
                    "per_category": {k: dict(v) for k, v in by_cat.items()},
                    "totals": dict(tot),
                    "signatures": {k: {"count": len(v), "example": result_json(v[0])} for k, v in sigs.items()},
                    "wall_s": round(wall, 1),
                    "code": CODE_STATE,
                    "workdir": str(WORK),
                    "root": IS_ROOT,
                },
                indent=1,
            )
        )
    return 1 if tot["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Sessions users run. Thin: each calls the library or a tool; the logic lives in src/stackmatrix."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
# Byte-compiled at install: this tool starts often (CI shards, gates) and imports pandas.
ENV = {"UV_COMPILE_BYTECODE": "1"}


def _install(session: nox.Session, *groups: str) -> None:
    session.install(".", env=ENV)
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group), env=ENV)


@nox.session
def matrix(session: nox.Session) -> None:
    """The main job: probe the default matrix, store the run, render reports/latest/."""
    _install(session)
    session.run("stackmatrix", "run", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests (integration tests read real wheels from the package index)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy, both clean."""
    _install(session, "lint", "test")  # mypy reads the tests too
    session.run("ruff", "check", "src", "tests", "benchmarks", "probes", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "probes", "noxfile.py")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Performance figures and ratios (benchmarks/), printed, never asserted as timed tests.
    ``nox -s bench`` (static tier) or ``nox -s bench -- runtime``."""
    _install(session)
    which = session.posargs[0] if session.posargs else "static"
    session.run("python", f"benchmarks/bench_{which}.py", *session.posargs[1:])

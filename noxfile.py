"""Sessions users run. Thin: each calls the library or a tool; the logic lives in src/stackmatrix."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
# Byte-compiled at install: this tool starts often (CI shards, gates) and imports pandas.
ENV = {"UV_COMPILE_BYTECODE": "1"}
# pytest-xdist, one worker per core (at most 4), each test file on one worker (its module fixtures — a cluster, a
# server, an environment — are made once): the whole suite took 0.51 of its serial time on this 2-core machine
# (716 s against 1,397 s), the unit tests about 0.5 (docs/development.md).
XDIST = ("-n", "auto", "--maxprocesses", "4", "--dist", "loadfile")
# Every marker pyproject.toml declares names what its tests need: a service or the package index.
NEEDS = [m.split(":")[0] for m in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]]


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
def nightly(session: nox.Session) -> None:
    """The nightly job: run the matrix (posargs go to ``run``), diff against the previous run, render every
    report format into <reports>/latest/ (Markdown/JSON diff beside the tables)."""
    _install(session)
    latest = os.path.join(os.environ.get("STACKMATRIX_REPORTS_DIR", "reports"), "latest")
    session.run("stackmatrix", "run", "--quiet", *session.posargs)
    session.run("stackmatrix", "diff", "--format", "md", "--output", os.path.join(latest, "diff.md"))
    session.run("stackmatrix", "diff", "--format", "json", "--output", os.path.join(latest, "diff.json"))
    session.run("stackmatrix", "report", "--format", "all", "--out", latest)


@nox.session
def gate(session: nox.Session) -> None:
    """The release gate: ``nox -s gate -- --candidate triton=26.04 [--policy FILE] [--baseline RUN]``
    (default policy: the 4x L4 edge host). Exits 1 on a regression; the Markdown summary is the PR comment."""
    _install(session)
    args = list(session.posargs)
    if not any(a == "--policy" or a.startswith("--policy=") for a in args):
        args += ["--policy", "matrix/policies/edge-4xl4.toml"]
    session.run("stackmatrix", "gate", *args)


@nox.session
def images(session: nox.Session) -> None:
    """The container images a docker-runner run of the selected cells needs, made before it (a GPU lab's nightly
    then only runs them): ``nox -s images -- [-k EXPR] [--push REGISTRY] [--plan]``. Stock Triton images are
    pulled, cell images built from images/; --push uses Docker's own credentials."""
    _install(session)
    session.run("stackmatrix", "image", "build", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """Render a stored run (default: the latest) in every format: ``nox -s report -- [RUN] [--format html]``."""
    _install(session)
    session.run("stackmatrix", "report", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests (integration tests read real wheels from the package index). First the services
    they need are installed and started (tests/provision.py); ``STACKMATRIX_TEST_SERVICES=present`` uses only
    what is here and deselects the rest."""
    session.run("python", "-m", "tests.provision")  # stdlib only: before the install, so it fails fast
    _install(session, "test")
    session.run("pytest", *XDIST, *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site from docs/ (MkDocs, Material theme) into site/; ``--strict``: a broken link, anchor
    or nav entry fails it. ``nox -s docs -- serve`` previews it on 127.0.0.1:8000."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "docs"))
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", "--strict", "--dev-addr", "127.0.0.1:8000", env=MKDOCS_ENV)
    else:
        _build_docs(session, *session.posargs)


MKDOCS_ENV = {"NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor, printed on every build


def _build_docs(session: nox.Session, *args: str) -> None:
    session.run("mkdocs", "build", "--strict", *args, env=MKDOCS_ENV)


@nox.session
def unit(session: nox.Session) -> None:
    """The inner loop: the unit tests alone (no service, no package index: the loopback mirror stands in), about
    a minute here. ``nox -s unit -- -k asof`` narrows it, ``-- -n 0`` runs it in one process."""
    _install(session, "test")
    deselect = " or ".join(NEEDS)
    session.run("pytest", *XDIST, "tests/unit", "-m", f"not ({deselect})", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy, the house's import contract (pyproject's [tool.importlinter]) and the docs' links, all clean."""
    _install(session, "lint", "test", "docs")  # mypy reads the tests too
    session.run("ruff", "check", "src", "tests", "benchmarks", "probes", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "probes", "examples", "noxfile.py")
    session.run("mypy")
    session.run("lint-imports")
    _build_docs(session, "--site-dir", os.path.join(session.create_tmp(), "site"))  # a broken link fails lint


@nox.session
def audit(session: nox.Session) -> None:
    """Hostile-input audit: ~1,000 hand-made cases through the CLI in subprocesses (exit codes, tracebacks, hangs,
    writes outside the store, secrets); prints a table per category. ``nox -s audit -- [--only CAT] [--json F]``."""
    _install(session)
    session.run("python", "-m", "tests.audit.hostile", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Performance figures and ratios (benchmarks/), printed, never asserted as timed tests.
    ``nox -s bench`` (static tier), ``nox -s bench -- runtime|reports|images|hostile|slurm``."""
    _install(session)
    which = session.posargs[0] if session.posargs else "static"
    session.run("python", f"benchmarks/bench_{which}.py", *session.posargs[1:])

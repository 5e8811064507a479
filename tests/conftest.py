from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.provision import MODE_ENV, SERVICES, missing_line

ROOT = Path(__file__).resolve().parents[1]
DESELECTED = pytest.StashKey[str]()
MISSING = pytest.StashKey[str]()
# Under pytest-xdist the workers collect: what they find missing or deselect travels to the controller in their
# ``workeroutput`` (its summary and exit status say it once, never a worker's crash).
WORKER_KEYS = {"stackmatrix_missing": MISSING, "stackmatrix_deselected": DESELECTED}


@pytest.fixture
def matrix_dir() -> Path:
    return ROOT / "matrix"


@pytest.hookimpl(trylast=True)  # after -m and -k deselected theirs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before any test runs: every selected test's services must be here (``nox -s tests`` provisions them first).
    One line and no test when one is missing, never a wall of failures; with the opt-out, its tests are
    deselected and named in the summary, never skipped silently."""
    markers = {item: {m.name for m in item.iter_markers()} for item in items}
    wanted = set().union(*markers.values())
    missing = [s for s in SERVICES if wanted.intersection(s.markers) and not s.ready()]
    if not missing or config.option.collectonly:
        return
    if os.environ.get(MODE_ENV) != "present":
        if not hasattr(config, "workerinput"):
            pytest.exit(missing_line(missing), returncode=4)
        _tell_controller(config, "stackmatrix_missing", missing_line(missing))  # a worker: run nothing
        config.hook.pytest_deselected(items=list(items))
        items[:] = []
        return
    gone = {m for s in missing for m in s.markers}
    dropped = [item for item in items if markers[item] & gone]
    config.hook.pytest_deselected(items=dropped)
    items[:] = [item for item in items if not markers[item] & gone]
    names = ", ".join(s.describe() for s in missing)
    config.stash[DESELECTED] = f"{len(dropped)} tests deselected ({MODE_ENV}=present), not here: {names}"
    _tell_controller(config, "stackmatrix_deselected", config.stash[DESELECTED])


def _tell_controller(config: pytest.Config, key: str, line: str) -> None:
    output = getattr(config, "workeroutput", None)
    if output is not None:
        output[key] = line


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's, on the controller: a worker ended
def pytest_testnodedown(node: Any, error: object) -> None:
    for key, stash in WORKER_KEYS.items():
        if line := getattr(node, "workeroutput", {}).get(key):
            node.config.stash[stash] = line


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.stash.get(MISSING, None):
        session.exitstatus = 4  # as pytest.exit gives when there are no workers


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if line := config.stash.get(MISSING, None):
        terminalreporter.write_line(f"! {line} !", red=True, bold=True)
    if line := config.stash.get(DESELECTED, None):
        terminalreporter.write_line(line, yellow=True, bold=True)

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.provision import MODE_ENV, SERVICES, missing_line

ROOT = Path(__file__).resolve().parents[1]
DESELECTED = pytest.StashKey[str]()


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
        pytest.exit(missing_line(missing), returncode=4)
    gone = {m for s in missing for m in s.markers}
    dropped = [item for item in items if markers[item] & gone]
    config.hook.pytest_deselected(items=dropped)
    items[:] = [item for item in items if not markers[item] & gone]
    names = ", ".join(s.describe() for s in missing)
    config.stash[DESELECTED] = f"{len(dropped)} tests deselected ({MODE_ENV}=present), not here: {names}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if line := config.stash.get(DESELECTED, None):
        terminalreporter.write_line(line, yellow=True, bold=True)

"""The package index as the test suite sees it: one as-of, in one place. Every test that reads the live index runs
with it (tests/integration/conftest.py sets it; a fixture that clears the environment sets it again), so a vLLM or
transformers release published later changes no test's outcome; counts are derived from this view (``cells_of``).
A test that needs "something new upstream" uses the loopback mirror (tests/mirror.py) instead."""

from __future__ import annotations

import json

AS_OF = "2026-11-30"  # the end of that day (UTC): vLLM 0.34.0 and transformers 5.24.0 are the newest seen
AS_OF_ENV = "STACKMATRIX_AS_OF"


def cells_of(*argv: str) -> list[str]:
    """The cell ids ``stackmatrix list ARGV`` gives in the frozen view (in-process; the output is not shown)."""
    import contextlib
    import io

    from stackmatrix.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["list", "--json", "--as-of", AS_OF, *argv])
    assert code == 0, f"stackmatrix list {' '.join(argv)}: exit {code}"
    return [c["id"] for c in json.loads(out.getvalue())]

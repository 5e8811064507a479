"""The one pattern every id part (stack, model, target, run) matches, checked where a part enters.

An id part becomes a file name (``cells/<stack>__<model>__<target>.json``, ``runs/<run-id>/``), a glob operand
and a row key, so it is safe by construction: 1-64 characters, letters and digits with single ``.``, ``_``, ``+``
or ``-`` between them. That rules out ``/``, a ``..`` step, a leading dot (hidden or temporary files), spaces and
``__`` (which joins the parts of a cell id). Run ids (``20261130T134108.123456Z-1a2b3c``) match it too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from stackmatrix.errors import BadInput

MAX_PART = 64
ID_PART = re.compile(r"[A-Za-z0-9]+(?:[._+-][A-Za-z0-9]+)*")
CELL_ID = re.compile(rf"(?:{ID_PART.pattern})__(?:{ID_PART.pattern})__(?:{ID_PART.pattern})")
EXPECTED = (
    f"1-{MAX_PART} letters and digits with single '.', '_', '+' or '-' between them "
    "(no '/', '..', '__', spaces or leading dot)"
)


def is_id_part(text: object) -> bool:
    return isinstance(text, str) and len(text) <= MAX_PART and ID_PART.fullmatch(text) is not None


def is_cell_id(text: object) -> bool:
    return isinstance(text, str) and len(text) <= 3 * MAX_PART + 4 and CELL_ID.fullmatch(text) is not None


def check_id_part(text: object, where: str, key: str) -> str:
    """``text`` when it is a valid id part, else exit 2 naming where it came from."""
    if not is_id_part(text):
        raise BadInput(where, key, text, f"an id: {EXPECTED}")
    assert isinstance(text, str)
    return text


def check_cell_id(text: object, where: str, key: str) -> str:
    if not is_cell_id(text):
        raise BadInput(where, key, text, f"a cell id <stack>__<model>__<target>, each part {EXPECTED}")
    assert isinstance(text, str)
    return text


def child(root: Path, name: str) -> Path:
    """``root / name``, refused unless it normalizes to a file directly inside ``root``: defence in depth (the
    name was checked where it entered; this is the store's own last check before it writes). Lexical, no system
    call: the store writes by ``os.replace``, which replaces a symlink planted at the name instead of following it."""
    path = os.path.normpath(os.path.join(root, name))
    if os.path.dirname(path) != os.path.normpath(root) or name.startswith("."):
        raise BadInput(str(root), "path", name, f"a file name inside {root}")
    return Path(path)

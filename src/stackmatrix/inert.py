"""Text from outside (an index, a wheel, an image, a probe's detail) made inert where it goes.

- Inline Markdown (a readiness footnote, a cell of the gate's pull-request summary, advice, a diff): one line of
  text, no raw HTML (an ``<img src=…>`` would render in a PR comment), no line breaks (``\\n\\n## …`` would become
  a heading), no code spans or links it did not ask for, a table's ``|`` escaped.
- A terminal: no control characters (an escape sequence from an image could rewrite the screen or the title).
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]", "\\": "\\\\"}
)


def md_text(text: str) -> str:
    """``text`` as inert inline Markdown (surrogates replaced: the file is UTF-8)."""
    flat = _CONTROL.sub(" ", text.encode("utf-8", "replace").decode("utf-8"))
    return flat.translate(_ESCAPES)


_TERMINAL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def term_text(text: str) -> str:
    """``text`` for a terminal: control characters (escape sequences among them) shown as ``\\xNN``, lines kept;
    surrogates replaced."""
    clean = text.encode("utf-8", "replace").decode("utf-8")
    return _TERMINAL.sub(lambda m: f"\\x{ord(m.group()):02x}", clean)

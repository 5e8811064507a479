"""Text from outside (an index, a wheel, an image, a probe's detail) placed inline in Markdown: a readiness
footnote, a table cell of the gate's pull-request summary, advice, a diff. It must stay one line of text: no raw
HTML (an ``<img src=…>`` would render in a PR comment), no line breaks (``\\n\\n## …`` would become a heading), no
code spans or links it did not ask for, no control characters, and a table's ``|`` escaped."""

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

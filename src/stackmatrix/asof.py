"""``--as-of WHEN``: a run sees the package index and the Triton catalog as they were then (uv's
``--exclude-newer``), so the same as-of and catalog give the same table whatever upstream published since.

A date means the end of that day in UTC (a file uploaded on it is seen); an RFC 3339 time means that instant. The
recorded text is the date as given, or the time in UTC, so a resumed run, a merge or a Slurm task reads back the
same instant. At the bottom of the house: it imports nothing of ours but the errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time

from stackmatrix.errors import BadInput

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# RFC 3339's date-time: a T (or a space, as RFC 3339 allows), seconds, an optional fraction, an offset or Z.
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
EXPECTED = "a date (2026-11-30: the end of that day, UTC) or an RFC 3339 time (2026-11-30T12:00:00Z), not in the future"


@dataclass(frozen=True)
class AsOf:
    text: str  # as recorded: the date, or the time in UTC
    cutoff: datetime  # the last instant seen (aware, UTC)

    def __str__(self) -> str:
        return self.text

    def sees(self, moment: datetime) -> bool:
        """Whether something that happened at ``moment`` had happened by then."""
        return moment <= self.cutoff

    @property
    def timestamp(self) -> float:
        return self.cutoff.timestamp()


def parse_as_of(where: str, value: str) -> AsOf:
    """The as-of a flag, a variable or a file gives; a malformed or future one is exit 2 naming ``where``."""
    text = value.strip()
    try:
        start = moment(text)  # a date: its first instant
    except (ValueError, OverflowError):
        raise BadInput(where, "as_of", value, EXPECTED) from None
    if start > datetime.now(UTC):
        raise BadInput(where, "as_of", value, EXPECTED)
    if _DATE.fullmatch(text):
        return AsOf(text, datetime.combine(start.date(), time.max, UTC))
    return AsOf(_utc_text(start), start)


def moment(text: str) -> datetime:
    """An RFC 3339 time (an index's ``upload-time``, a catalog's ``published``) as an aware UTC datetime; a date
    alone is its first instant. ValueError when it is neither."""
    t = text.strip()
    if _DATE.fullmatch(t):
        return datetime.strptime(t, "%Y-%m-%d").replace(tzinfo=UTC)
    if not _TIME.fullmatch(t):
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    head, dot, rest = t.replace("t", "T").replace(" ", "T").replace("z", "Z").partition(".")
    if dot:  # Python takes at most 6 digits of a fraction: nanoseconds (some indexes give them) are cut
        digits = re.match(r"\d+", rest)
        assert digits is not None
        head = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
    parsed = datetime.fromisoformat(head)
    return parsed.astimezone(UTC)


def _utc_text(at: datetime) -> str:
    text = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if at.microsecond:
        text += f".{at.microsecond:06d}".rstrip("0")
    return text + "Z"


def uv_args(as_of: AsOf | None) -> list[str]:
    """The same view for uv's own resolutions (``--resolve full``, environments, staging): its
    ``--exclude-newer`` at the same instant (files without an upload time, e.g. a find-links folder's, are uv's
    to judge)."""
    return [] if as_of is None else ["--exclude-newer", as_of.cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ")]

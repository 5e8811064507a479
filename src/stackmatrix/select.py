"""Cell selection: ``-k`` keyword expressions (pytest's grammar), ``--only`` globs, ``--shard i/n``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

from stackmatrix.domain import Cell
from stackmatrix.errors import BadInput

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class _Expr:
    """``-k 'e4b and not triton-25'``: words match as case-insensitive substrings of the cell id."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _TOKEN.findall(text)
        self.pos = 0
        if not self.tokens:
            raise BadInput("-k", "expression", text, "words joined by and / or / not, with parentheses")

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        tok = self._peek()
        if tok is None:
            raise BadInput("-k", "expression", self.text, "a complete expression (it ends too early)")
        self.pos += 1
        return tok

    def parse(self) -> object:
        tree = self._or()
        if self._peek() is not None:
            raise BadInput("-k", "expression", self.text, f"an operator before {self._peek()!r}")
        return tree

    def _or(self) -> object:
        node = self._and()
        while self._peek() == "or":
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> object:
        node = self._not()
        while self._peek() == "and":
            self._take()
            node = ("and", node, self._not())
        return node

    def _not(self) -> object:
        if self._peek() == "not":
            self._take()
            return ("not", self._not())
        tok = self._take()
        if tok == "(":
            node = self._or()
            if self._take() != ")":
                raise BadInput("-k", "expression", self.text, "a closing parenthesis")
            return node
        if tok in {")", "and", "or"}:
            raise BadInput("-k", "expression", self.text, f"a word where {tok!r} stands")
        return tok.lower()


def _eval(node: object, ident: str) -> bool:
    if isinstance(node, str):
        return node in ident
    assert isinstance(node, tuple)
    if node[0] == "not":
        return not _eval(node[1], ident)
    if node[0] == "and":
        return _eval(node[1], ident) and _eval(node[2], ident)
    return _eval(node[1], ident) or _eval(node[2], ident)


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise BadInput("--shard", "shard", text, "i/n with 1 <= i <= n, e.g. 2/8")
    return int(m.group(1)), int(m.group(2))


def select_ids(ids: Iterable[str], *, keyword: str | None = None, only: Sequence[str] = ()) -> list[str]:
    """Ids, sorted, that match ``-k`` and every ``--only`` glob (case-insensitively)."""
    out = sorted(ids)
    if keyword:
        tree = _Expr(keyword).parse()
        out = [i for i in out if _eval(tree, i.lower())]
    if only:
        out = [i for i in out if any(fnmatch.fnmatchcase(i.lower(), g.lower()) for g in only)]
    return out


def select(
    cells: Sequence[Cell], *, keyword: str | None = None, only: Sequence[str] = (), shard: str | None = None
) -> list[Cell]:
    """Cells in id order that match every filter. Shards split the *selected* cells round-robin."""
    by_id = {c.id: c for c in cells}
    out = [by_id[i] for i in select_ids(by_id, keyword=keyword, only=only)]
    if shard:
        i, n = parse_shard(shard)
        out = out[i - 1 :: n]
    return out

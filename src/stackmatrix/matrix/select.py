"""Cell selection: ``-k`` keyword expressions (pytest's grammar), ``--only`` globs, ``--shard i/n``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence

from stackmatrix.domain import Cell
from stackmatrix.errors import BadInput

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")
MAX_DEPTH = 64  # nested parentheses and ``not``s: deeper is a mistake, not a selection (and would recurse)

# A parsed expression: a word (substring of the id), ("not", node), or ("and" | "or", [node, ...]) n-ary, so a
# valid 3,000-term ``or`` is one flat list, not 3,000 levels of nesting.
Node = str | tuple[str, object]


class _Expr:
    """``-k 'e4b and not triton-25'``: words match as case-insensitive substrings of the cell id."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _TOKEN.findall(text)
        self.pos = 0
        self.depth = 0
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

    def parse(self) -> Node:
        tree = self._or()
        if self._peek() is not None:
            raise BadInput("-k", "expression", self.text, f"an operator before {self._peek()!r}")
        return tree

    def _nary(self, op: str, operand: Callable[[], Node]) -> Node:
        nodes = [operand()]
        while self._peek() == op:
            self._take()
            nodes.append(operand())
        return nodes[0] if len(nodes) == 1 else (op, nodes)

    def _or(self) -> Node:
        return self._nary("or", self._and)

    def _and(self) -> Node:
        return self._nary("and", self._not)

    def _not(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise BadInput("-k", "expression", self.text, f"at most {MAX_DEPTH} nested parentheses and 'not's")
        try:
            return self._atom()
        finally:
            self.depth -= 1

    def _atom(self) -> Node:
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
    op, arg = node
    if op == "not":
        return not _eval(arg, ident)
    assert isinstance(arg, list)
    if op == "and":
        return all(_eval(n, ident) for n in arg)
    return any(_eval(n, ident) for n in arg)


def parse_shard(text: str, where: str = "--shard") -> tuple[int, int]:
    m = re.fullmatch(r"([0-9]{1,6})/([0-9]{1,6})", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise BadInput(where, "shard", text, "i/n with 1 <= i <= n <= 999999, e.g. 2/8")
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
    if shard is not None:  # an empty --shard is a mistake, not "no sharding"
        i, n = parse_shard(shard)
        out = out[i - 1 :: n]
    return out

"""bisect's search on the runtime tier with a stubbed rung (each probe stands for one ladder): at most
⌈log2 n⌉ + 2 ladders, the two releases either side of the boundary both probed, and an axis that is not monotonic
said to be so with the intervals probed."""

from __future__ import annotations

import math

import pytest

from stackmatrix.answers.bisect import Search, bound, first_pass, intervals, last_pass

RELEASES = [f"0.{i}.0" for i in range(40)]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40, 71, 241])
@pytest.mark.parametrize("where", [0.0, 0.3, 0.5, 0.99, 1.0])
def test_the_first_passing_release_in_at_most_log2_n_plus_2_ladders(n: int, where: float) -> None:
    releases = [f"r{i}" for i in range(n)]
    boundary = min(n - 1, int(where * n))
    ladders: list[int] = []

    def rung(i: int) -> bool:  # the stub: passes from the boundary on
        ladders.append(i)
        return i >= boundary

    s = Search(releases, rung)
    assert first_pass(s) == boundary
    assert len(ladders) == len(set(ladders)) == s.ladders <= math.ceil(math.log2(n)) + 2 == bound(n)
    assert s.seen[boundary] is True
    if boundary > 0:
        assert s.seen[boundary - 1] is False  # the neighbour below was run too: the boundary is verified


def test_no_release_passes_costs_two_ladders() -> None:
    s = Search(RELEASES, lambda i: False)  # the newest fails, and so does the oldest: not a regression either
    assert first_pass(s) is None and s.ladders == 2


def test_the_last_release_before_a_regression() -> None:
    s = Search(RELEASES, lambda i: i <= 27)  # works from the oldest, breaks at 0.28.0
    first = first_pass(s)
    assert first == 0
    assert last_pass(s, first) == 27 and s.seen[28] is False and s.seen[27] is True
    assert s.ladders <= bound(len(RELEASES)) + 1


def test_works_breaks_works_is_reported_with_the_intervals_probed() -> None:
    from stackmatrix.answers.bisect import Answer

    seen = {0: False, 5: True, 9: False, 12: True, 39: True}
    assert intervals(seen, RELEASES) == [
        ("0.0.0", "0.0.0", False),
        ("0.5.0", "0.5.0", True),
        ("0.9.0", "0.9.0", False),
        ("0.12.0", "0.39.0", True),
    ]
    answer = Answer("vllm", RELEASES, "m", "l4x1", "predicted", "runtime", seen, {}, 5, None)
    assert not answer.monotonic
    assert "Not monotonic: 0.0.0 to 0.0.0 fails; 0.5.0 to 0.5.0 passes; 0.9.0 to 0.9.0 fails" in _md(answer)


def _md(answer: object) -> str:
    from stackmatrix.answers.bisect import render_markdown

    return render_markdown(answer)  # type: ignore[arg-type]

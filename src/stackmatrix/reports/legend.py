"""The verdicts' symbols and meanings, shared by every rendering (no pandas: history and diffs import it)."""

from __future__ import annotations

from stackmatrix.domain import Verdict

SYMBOL = {
    Verdict.SERVES: "●",
    Verdict.RUNS_TINY: "◐",
    Verdict.PREDICTED: "◇",
    Verdict.OVERRIDE: "⚑",
    Verdict.BLOCKED: "✖",
    Verdict.NO_FIT: "▽",
    Verdict.NOT_RUN: "·",
}
MEANING = {
    Verdict.SERVES: "observed: the real checkpoint served on the target GPU",
    Verdict.RUNS_TINY: "observed: the real engine served a tiny checkpoint of the same architecture",
    Verdict.PREDICTED: "declared only: every static check passes, nothing observed",
    Verdict.OVERRIDE: "predicted only with a dependency override the declared requirements forbid",
    Verdict.BLOCKED: "a probe failed (footnote: the first failing reason)",
    Verdict.NO_FIT: "weights + KV reserve exceed the target's memory",
    Verdict.NOT_RUN: "not run here (footnote: why)",
}
# Verdicts whose table entry carries no footnote: a plain pass needs no "why".
PLAIN = frozenset({Verdict.SERVES, Verdict.RUNS_TINY, Verdict.PREDICTED})

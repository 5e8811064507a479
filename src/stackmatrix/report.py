"""The readiness table, from stored cell results only: terminal, Markdown, CSV and JSON.

Rows are model x target, columns are stacks (DESIGN.md). ``predicted`` never looks like ``serves``: each
verdict has its own symbol, and the legend says which verdicts are observed and which are declared.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from stackmatrix.atomic import atomic_write_text
from stackmatrix.domain import CellResult, Status, Verdict
from stackmatrix.ladder.verdict import derive

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


def _why(r: CellResult) -> str:
    """The evidence line for a cell that is not a plain pass: its deciding probe's detail."""
    for o in r.outcomes:
        if r.reason is not None and o.reason == r.reason and o.status is not Status.PASS:
            return o.detail
    return ""


COLUMNS = (
    "cell",
    "stack",
    "kind",
    "triton",
    "vllm",
    "transformers",
    "model",
    "target",
    "verdict",
    "reason",
    "override",
    "why",
    "declared_verdict",
    "observed_verdict",
    "contradiction",
)
STATIC_PROBES = frozenset({"resolve", "model-type", "arch", "backend-imports", "fit"})


def declared_vs_observed(r: CellResult) -> tuple[str, str, bool]:
    """(static verdict, observed verdict or "", whether the observation contradicts the prediction)."""
    static = str(derive([o for o in r.outcomes if o.probe in STATIC_PROBES])[0])
    ran = [o for o in r.outcomes if o.probe not in STATIC_PROBES and o.status is not Status.SKIP]
    if not ran:
        return static, "", False
    observed = str(r.verdict)
    return static, observed, static in ("predicted", "override") and observed in ("blocked", "no-fit")


def frame(results: Iterable[CellResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        d = r.declared
        static, observed, contradiction = declared_vs_observed(r)
        rows.append(
            {
                "cell": r.cell_id,
                "stack": r.cell_id.split("__")[0],
                "kind": d.get("kind"),
                "triton": d.get("triton"),
                "vllm": d.get("vllm"),
                "transformers": d.get("transformers"),
                "model": d.get("model"),
                "target": d.get("target"),
                "verdict": str(r.verdict),
                "reason": str(r.reason) if r.reason else "",
                "override": r.override or "",
                "why": _why(r),
                "declared_verdict": static,
                "observed_verdict": observed,
                "contradiction": contradiction,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _legend() -> list[str]:
    return [f"{SYMBOL[v]} {v}: {MEANING[v]}" for v in Verdict]


def _stack_order(df: pd.DataFrame) -> list[str]:
    return sorted(df["stack"].unique(), key=lambda s: (not s.startswith("triton"), s))


def render_markdown(df: pd.DataFrame, title: str = "Readiness") -> str:
    notes: dict[str, int] = {}

    def mark(verdict: str, reason: str, override: str, why: str) -> str:
        sym = SYMBOL[Verdict(verdict)]
        if verdict in ("predicted", "serves", "runs-tiny"):
            return sym
        text = reason + (f" ({override})" if override else "") + (f": {why}" if why else "")
        return f"{sym}[^{notes.setdefault(text, len(notes) + 1)}]"

    df = df.assign(
        mark=[mark(*row) for row in zip(df["verdict"], df["reason"], df["override"], df["why"], strict=True)]
    )
    table = df.pivot_table(index=["model", "target"], columns="stack", values="mark", aggfunc="first")
    table = table.reindex(columns=_stack_order(df)).fillna("")
    lines = [f"# {title}", "", "Legend: " + " · ".join(_legend()), ""]
    flat = table.reset_index()
    lines.append(tabulate(flat.values.tolist(), headers=list(flat.columns), tablefmt="github"))
    lines += ["", *(f"[^{n}]: {text}" for text, n in notes.items())]
    observed = df[df["observed_verdict"] != ""]
    if len(observed):
        lines += [
            "",
            "## Declared vs observed",
            "",
            "Cells the runtime tier ran: the static prediction beside what was observed (⚠ = contradicts).",
            "",
        ]
        rows = [
            [c, d, o, (r + (f": {w}" if w else "")) if r else "", "⚠" if x else ""]
            for c, d, o, r, w, x in zip(
                observed["cell"],
                observed["declared_verdict"],
                observed["observed_verdict"],
                observed["reason"],
                observed["why"],
                observed["contradiction"],
                strict=True,
            )
        ]
        lines.append(tabulate(rows, headers=["cell", "declared", "observed", "reason", ""], tablefmt="github"))
    return "\n".join(lines) + "\n"


def _short(model: str) -> str:
    return model.split("/", 1)[-1].removeprefix("gemma-4-")


def render_terminal(df: pd.DataFrame) -> str:
    """Rows are stacks, columns models; each entry holds one symbol per target (in the header's order)."""
    if df.empty:
        return "no cells\n"
    targets = list(dict.fromkeys(df["target"]))
    models = list(dict.fromkeys(df["model"]))
    sym = {
        (s, m, t): SYMBOL[Verdict(v)]
        for s, m, t, v in zip(df["stack"], df["model"], df["target"], df["verdict"], strict=True)
    }
    rows = [[s, *("".join(sym.get((s, m, t), " ") for t in targets) for m in models)] for s in _stack_order(df)]
    counts = df["verdict"].value_counts()
    summary = "  ".join(f"{SYMBOL[v]} {v}: {counts.get(str(v), 0)}" for v in Verdict)
    head = f"each entry: one symbol per target, in order {', '.join(targets)}"
    body = tabulate(rows, headers=["stack", *map(_short, models)], tablefmt="simple", stralign="center")
    return f"{head}\n{body}\n\n{summary}\n"


def render_json(results: Sequence[CellResult]) -> str:
    """Verdicts and probe lines per cell; the evidence stays in the run's cell files."""
    rows = [{**r.summary(), "declared": dict(r.declared)} for r in results]
    return json.dumps(rows, separators=(",", ":"))


def write_latest(results: Sequence[CellResult], out_dir: Path, title: str) -> dict[str, Path]:
    df = frame(results)
    files = {
        "md": out_dir / "readiness.md",
        "csv": out_dir / "readiness.csv",
        "json": out_dir / "readiness.json",
        "txt": out_dir / "readiness.txt",
    }
    atomic_write_text(files["md"], render_markdown(df, title))
    atomic_write_text(files["csv"], df.to_csv(index=False))
    atomic_write_text(files["json"], render_json(results))
    atomic_write_text(files["txt"], render_terminal(df))
    return files

"""The readiness table as one self-contained HTML page: filters, footnotes, and every probe's evidence on click.

Nothing is fetched: CSS and JS are inline and a Content-Security-Policy forbids any other load. The bytes are a
function of the Report alone (no clock, sorted keys, the frame's orders). A real run repeats most outcomes
verbatim across cells (~25,000 outcomes, ~600 distinct), so the page holds each distinct outcome and stack pins
once: a 5,664-cell run is a few MB instead of the ~20 MB of its cell files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

import pandas as pd

from stackmatrix.domain import NAMING, PASSING, Outcome, StackKind, Verdict
from stackmatrix.reports.legend import MEANING, SYMBOL
from stackmatrix.reports.table import Report, footnotes, observed_rows, pivot

# Which verdicts rest on an observation and which on declared facts only: the legend says it in words.
BASIS = {
    Verdict.SERVES: "observed",
    Verdict.RUNS_TINY: "observed",
    Verdict.PREDICTED: "declared only",
    Verdict.OVERRIDE: "declared only",
    Verdict.BLOCKED: "declared or observed",
    Verdict.NO_FIT: "declared or observed",
    Verdict.NOT_RUN: "nothing decided",
}
# run.json keys shown first, in this order; any other key follows, sorted.
META_ORDER = (
    "run_id",
    "status",
    "tier",
    "tool_version",
    "matrix",
    "matrix_hash",
    "started",
    "finished",
    "duration_s",
    "cells_selected",
    "cells_written",
    "host",
)
# The columns of each row of the embedded ``cells`` array (columnar: the keys are not repeated 5,000 times).
CELL_FIELDS = (
    "cell",
    "verdict",
    "reason",
    "override",
    "fingerprint",
    "note",
    "declared_verdict",
    "observed_verdict",
    "contradiction",
    "model",
    "target",
    "pins",
    "seen",
    "probes",
)
# The declared keys every row already carries; the rest are the stack's pins, shared between cells.
ROW_KEYS = ("model", "target")
FILTERS = (("model", "model"), ("target", "target"), ("kind", "stack kind"), ("verdict", "verdict"))
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

# The verdicts of a cell that serves: its panel links the recipe that runs it (stackmatrix recipe CELL)
SERVING = frozenset(str(v) for v in PASSING)


def _kind_css() -> str:
    """Each kind's column and legend mark, in its colour from domain.NAMING (a new kind brings its own)."""
    return "\n".join(
        f"th.k-{kind}, .kk.k-{kind} {{ border-top: 3px solid {naming.colour} !important; }}"
        for kind, naming in NAMING.items()
    )


CSS = """
:root { font: 14px/1.4 system-ui, sans-serif; color: #1f2328; }
body { margin: 1rem 1.5rem; }
[hidden] { display: none !important; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
h2 { font-size: 1.1rem; margin: 1.2rem 0 .4rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: 0; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
.top { display: flex; flex-wrap: wrap; gap: 0 3rem; align-items: start; }
.top > section { flex: 0 1 auto; min-width: 0; }
#legend { max-width: 60rem; }
table { border-collapse: collapse; }
table.legend td, table.legend th, table.dvo td, table.dvo th { padding: .15rem .6rem; border-bottom: 1px solid #d0d7de;
  text-align: left; }
p.basis { margin: .4rem 0; }
#filters { display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: center; margin: .6rem 0;
  position: sticky; top: 0; background: #fff; padding: .3rem 0; z-index: 3; }
#filters select { max-width: 22rem; }
.scroll { overflow: auto; max-height: 75vh; border: 1px solid #d0d7de; }
#readiness { font-size: 12px; }
#readiness th, #readiness td { border: 1px solid #d8dee4; }
#readiness thead th { position: sticky; top: 0; background: #f6f8fa; z-index: 2; vertical-align: bottom; }
#readiness th.stack { padding: .3rem .1rem; font-weight: 500; }
#readiness th.stack span { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }
#readiness th.row { position: sticky; background: #f6f8fa; text-align: left; white-space: nowrap; z-index: 1;
  font-weight: 500; padding: 0 .4rem; }
#readiness th.model { left: 0; min-width: 23rem; max-width: 23rem; box-sizing: border-box; overflow: hidden;
  text-overflow: ellipsis; }
#readiness th.target { left: 23rem; min-width: 4.5rem; box-sizing: border-box; }
#readiness thead th.row { z-index: 4; }
#readiness td { text-align: center; min-width: 1.6rem; height: 1.6rem; padding: 0 .1rem; white-space: nowrap;
  cursor: pointer; }
#readiness td.empty { background: #fff; cursor: default; }
#readiness td.off { visibility: hidden; }
#readiness td.selected { outline: 3px solid #0969da; outline-offset: -2px; }
#readiness td sup { font-size: 8px; margin-left: 1px; }
.kk { border-top-width: 3px; border-top-style: solid; padding-top: 1px; }
{KIND_CSS}
.v-serves { background: #1a7f37; color: #fff; }
.v-runs-tiny { background: #6fdd8b; color: #0d3b1a; }
.v-predicted { background: #ddf4ff; color: #0550ae; }
.v-override { background: #fff1c2; color: #7d4e00; }
.v-blocked { background: #ffd8d3; color: #a40e26; }
.v-no-fit { background: #f1e2ff; color: #6639ba; }
.v-not-run { background: #eaeef2; color: #57606a; }
.sym { display: inline-block; min-width: 1.4rem; text-align: center; border-radius: 3px; }
ol.notes { padding-left: 2.5rem; font-family: ui-monospace, monospace; font-size: 12px; }
#evidence { position: fixed; top: 0; right: 0; width: min(44rem, 100vw); height: 100vh; overflow: auto;
  background: #fff; border-left: 1px solid #d0d7de; box-shadow: -6px 0 18px rgba(0,0,0,.15); padding: 1rem 1.2rem;
  box-sizing: border-box; z-index: 10; }
#evidence header { display: flex; justify-content: space-between; align-items: start; gap: 1rem; }
#evidence h2 { margin: 0; font-family: ui-monospace, monospace; font-size: 1rem; word-break: break-all; }
.probe { border: 1px solid #d0d7de; border-radius: 6px; margin: .5rem 0; padding: .4rem .6rem; }
.probe h4 { margin: 0 0 .2rem; font-size: .95rem; }
.s-pass { color: #1a7f37; } .s-fail { color: #cf222e; } .s-error { color: #9a6700; } .s-skip { color: #57606a; }
pre { background: #f6f8fa; padding: .4rem .6rem; overflow: auto; font-size: 12px; margin: .3rem 0 0; }
""".replace("{KIND_CSS}", _kind_css())

JS = """
(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("data").textContent);
  // Rows of the columnar cell table back into objects, keyed by cell id.
  const cells = new Map(data.cells.map((row) => {
    const c = Object.fromEntries(data.fields.map((f, i) => [f, row[i]]));
    return [c.cell, c];
  }));
  const table = document.getElementById("readiness");
  const rows = table ? Array.from(table.tBodies[0].rows) : [];
  const heads = table ? Array.from(table.tHead.rows[0].querySelectorAll("th.stack")) : [];
  const filters = ["model", "target", "kind", "verdict"].map((k) => [k, document.getElementById("f-" + k)]);
  const count = document.getElementById("count");
  const panel = document.getElementById("evidence");
  const body = document.getElementById("ev-body");
  const ROW_HEADERS = 2;  // model and target open every row

  function apply() {
    const want = filters.map(([k, el]) => [k, el.value]).filter(([, v]) => v !== "");
    const perColumn = new Array(heads.length).fill(0);
    let shown = 0;
    for (const tr of rows) {
      let inRow = 0;
      for (let i = 0; i < heads.length; i++) {
        const td = tr.cells[i + ROW_HEADERS];
        if (!td.dataset.cell) continue;
        const ok = want.every(([k, v]) => td.dataset[k] === v);
        td.classList.toggle("off", !ok);
        if (ok) { inRow++; perColumn[i]++; }
      }
      tr.hidden = inRow === 0;
      shown += inRow;
    }
    // A column with no visible cell goes as a whole, so the remaining cells stay under their headers.
    heads.forEach((th, i) => {
      const hide = perColumn[i] === 0;
      th.hidden = hide;
      for (const tr of rows) tr.cells[i + ROW_HEADERS].hidden = hide;
    });
    count.textContent = String(shown);
  }

  function add(parent, tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    parent.appendChild(e);
    return e;
  }
  function pairs(parent, entries) {
    const dl = add(parent, "dl", null, "meta");
    for (const [k, v] of entries) {
      add(dl, "dt", k);
      add(dl, "dd", v === null || v === undefined || v === "" ? "—" : v);
    }
    return dl;
  }

  function show(id) {
    const c = cells.get(id);
    if (!c) return;
    for (const td of table.querySelectorAll("td.selected")) td.classList.remove("selected");
    const td = table.querySelector(`td[data-cell="${CSS.escape(id)}"]`);
    if (td) td.classList.add("selected");
    document.getElementById("ev-cell").textContent = c.cell;
    body.replaceChildren();
    const note = c.note ? document.getElementById("fn-" + c.note) : null;
    pairs(body, [
      ["verdict", c.verdict],
      ["reason", c.reason],
      ["override", c.override],
      ["footnote", note ? `[${c.note}] ${note.textContent}` : null],
      ["declared verdict", c.declared_verdict + " (static checks only)"],
      ["observed verdict", c.observed_verdict
        ? c.observed_verdict + (c.contradiction ? " (contradicts the prediction)" : "")
        : "nothing observed"],
      ["fingerprint", c.fingerprint],
    ]);
    if (data.recipes.verdicts.includes(c.verdict)) {  // a cell that serves: what it takes to run it
      add(body, "h3", "Recipe");
      const where = "recipes/" + c.cell;
      const link = add(add(body, "p"), "a", where + "/README.md", "recipe");
      link.href = where.split("/").map(encodeURIComponent).join("/") + "/README.md";
      add(body, "p", "written beside this page by:");
      add(body, "pre", `stackmatrix recipe ${c.cell} --run ${data.recipes.run} --out ${where}`, "recipe-command");
    }
    add(body, "h3", "Declared pins");
    const declared = Object.assign({}, data.pins[c.pins], {model: c.model, target: c.target});
    pairs(body, Object.keys(declared).sort().map((k) => [k, declared[k]]));
    const seen = data.pins[c.seen];
    add(body, "h3", "Observed versions");
    const names = Object.keys(seen);
    if (names.length) pairs(body, names.map((k) => [k, seen[k]]));
    else add(body, "p", "none: nothing of this cell ran in an environment or image");
    add(body, "h3", `Probes (${c.probes.length})`);
    for (const i of c.probes) {
      const o = data.outcomes[i];
      const box = add(body, "div", null, "probe");
      box.dataset.probe = o.name;
      const h = add(box, "h4");
      add(h, "span", o.name + " ");
      add(h, "span", o.status, "s-" + o.status);
      pairs(box, [
        ["reason", o.reason], ["detail", o.detail], ["override", o.override], ["duration", o.duration_s + " s"],
      ]);
      add(box, "pre", JSON.stringify(o.evidence, null, 2), "evidence-json");
    }
    panel.hidden = false;
    try { history.replaceState(null, "", "#cell=" + encodeURIComponent(id)); } catch (e) { /* file:// may refuse */ }
  }

  function hide() {
    panel.hidden = true;
    for (const td of document.querySelectorAll("td.selected")) td.classList.remove("selected");
  }

  for (const [, el] of filters) el.addEventListener("change", apply);
  document.getElementById("f-reset").addEventListener("click", () => {
    for (const [, el] of filters) el.value = "";
    apply();
  });
  if (table) {
    table.addEventListener("click", (ev) => {
      const td = ev.target.closest("td[data-cell]");
      if (td) show(td.dataset.cell);
    });
    table.addEventListener("keydown", (ev) => {
      const td = ev.target.closest("td[data-cell]");
      if (td && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); show(td.dataset.cell); }
    });
  }
  document.getElementById("ev-close").addEventListener("click", hide);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") hide(); });
  const fromHash = () => {
    if (location.hash.startsWith("#cell=")) show(decodeURIComponent(location.hash.slice(6)));
  };
  window.addEventListener("hashchange", fromHash);
  apply();
  fromHash();
})();
"""


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


# Canonical JSON (sorted keys, no spaces): the same object always gives the same string. One encoder, built once.
_json_text = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode


def _script_safe(text: str) -> str:
    """Make JSON safe inside <script>: no ``</script>``, ``<!--`` or ``]]>`` can form. JSON has ``<``, ``>`` and
    ``&`` only inside strings, where the \\u escapes mean the same characters to JSON.parse."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _Interner:
    """Distinct JSON texts in first-seen order; ``add`` gives the index of its text."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def add(self, value: object) -> int:
        return self.index.setdefault(_json_text(value), len(self.index))

    def json_array(self) -> str:
        return "[" + ",".join(self.index) + "]"


class _Outcomes(_Interner):
    """Outcomes interned on a cheap key first: encoding all 25,000 outcomes of a large run costs more than the rest
    of the page. Equal keys mean equal outcomes; equal outcomes under different keys still meet in the text."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[object, ...], int] = {}

    def outcome(self, o: Outcome) -> int:
        key = (o.probe, o.status, o.reason, o.detail, o.override, o.duration_s, repr(o.evidence))
        found = self.seen.get(key)
        if found is None:
            found = self.seen[key] = self.add(o.to_json())
        return found


def _data(report: Report, notes: list[int | None]) -> str:
    """The embedded evidence: ``{"cells": [[...CELL_FIELDS]], "fields", "outcomes", "pins"}``, deduplicated."""
    outcomes, pins = _Outcomes(), _Interner()
    df = report.df
    rows = []
    for r, note, static, observed, contradiction in zip(
        report.results,
        notes,
        df["declared_verdict"].tolist(),
        df["observed_verdict"].tolist(),
        df["contradiction"].tolist(),
        strict=True,
    ):
        rows.append(
            [
                r.cell_id,
                str(r.verdict),
                str(r.reason) if r.reason else None,
                r.override,
                r.fingerprint,
                note,
                static,
                observed or None,
                bool(contradiction),
                r.declared.get("model"),
                r.declared.get("target"),
                pins.add({k: v for k, v in r.declared.items() if k not in ROW_KEYS}),
                pins.add(r.observed),
                [outcomes.outcome(o) for o in r.outcomes],
            ]
        )
    recipes = {"run": str(report.meta.get("run_id", "")), "verdicts": [str(v) for v in PASSING]}
    text = (
        f'{{"cells":{_json_text(rows)},"fields":{_json_text(CELL_FIELDS)},'
        f'"outcomes":{outcomes.json_array()},"pins":{pins.json_array()},"recipes":{_json_text(recipes)}}}'
    )
    return _script_safe(text)


def _value(value: Any) -> str:
    """A run.json value as HTML: mappings nest, lists join, scalars show as JSON would (strings unquoted)."""
    if isinstance(value, Mapping):
        return _dl(value, ())
    if isinstance(value, list | tuple):
        return escape(", ".join(v if isinstance(v, str) else _json_text(v) for v in value))
    if value is None:
        return "—"
    return escape(value if isinstance(value, str) else _json_text(value))


def _dl(meta: Mapping[str, Any], order: Iterable[str]) -> str:
    first = [k for k in order if k in meta]
    keys = first + sorted(k for k in meta if k not in first)
    items = "".join(f"<dt>{escape(str(k))}</dt><dd>{_value(meta[k])}</dd>" for k in keys)
    return f'<dl class="meta">{items}</dl>'


# What run.json holds that no reader of the table needs: upstream's release lists (a diff shows their news).
NOT_SHOWN = frozenset({"upstream"})


def _summary(df: pd.DataFrame) -> str:
    """The answer in one line, above the table: cells by verdict, then what to look at twice."""
    if df.empty:
        return '<p id="summary">no cells</p>'
    counts = df["verdict"].value_counts()
    parts = [f"{int(counts[v])} {v}" for v in Verdict if v in counts]
    notes = [f"{n} {what}" for what, n in (
        ("contradicting the static tier", int(df["contradiction"].sum())),
        ("flaky", int(df["flaky"].sum())),
    ) if n]  # fmt: skip
    not_run = df.loc[df["verdict"] == Verdict.NOT_RUN, "reason"].value_counts()
    if len(not_run):
        notes.append("not run: " + ", ".join(f"{int(n)} {reason or 'unknown'}" for reason, n in not_run.items()))
    text = f"{len(df)} cells: {', '.join(parts)}" + "".join(f"; {n}" for n in notes)
    return f'<p id="summary"><strong>{escape(text)}</strong></p>'


def _run(meta: Mapping[str, Any]) -> str:
    """The run's record, collapsed: who ran what, with which options (upstream's lists are left to the diff)."""
    shown = {k: v for k, v in meta.items() if k not in NOT_SHOWN}
    head = ", ".join(escape(str(meta[k])) for k in ("run_id", "status", "tier") if meta.get(k))
    return f'<details id="run"><summary>Run {head}</summary>{_dl(shown, META_ORDER)}</details>'


def _legend(df: pd.DataFrame) -> str:
    counts = df["verdict"].value_counts()
    rows = "".join(
        f'<tr data-verdict="{v}"><td><span class="sym v-{v}">{SYMBOL[v]}</span></td><td>{v}</td>'
        f"<td>{escape(BASIS[v])}</td><td>{escape(MEANING[v])}</td><td>{int(counts.get(str(v), 0))}</td></tr>"
        for v in Verdict
    )
    return (
        '<section id="legend"><h2>Legend</h2>'
        f'<p class="basis"><b>{SYMBOL[Verdict.PREDICTED]} predicted is declared only</b>: every static check of the '
        "published wheels passes, nothing ran. Only "
        f"<b>{SYMBOL[Verdict.RUNS_TINY]} runs-tiny</b> and <b>{SYMBOL[Verdict.SERVES]} serves</b> are observed: "
        "a real engine loaded, generated and served.</p>"
        '<table class="legend"><thead><tr><th>symbol</th><th>verdict</th><th>basis</th><th>meaning</th>'
        f"<th>cells</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _select(key: str, label: str, options: Iterable[tuple[str, int]], total: int) -> str:
    opts = "".join(f'<option value="{_attr(v)}">{escape(v)} ({n})</option>' for v, n in options)
    return (
        f'<label>{label} <select id="f-{key}" name="{key}">'
        f'<option value="">all ({total})</option>{opts}</select></label>'
    )


def _filters(df: pd.DataFrame) -> str:
    def counted(column: str, values: Iterable[str]) -> list[tuple[str, int]]:
        counts = df[column].value_counts()
        return [(v, int(counts.get(v, 0))) for v in values]

    total = len(df)
    options = {
        "model": counted("model", sorted(df["model"].dropna().unique())),
        "target": counted("target", sorted(df["target"].dropna().unique())),
        "kind": counted("kind", [str(k) for k in StackKind]),
        "verdict": counted("verdict", [str(v) for v in Verdict]),
    }
    selects = "".join(_select(key, label, options[key], total) for key, label in FILTERS)
    return (
        f'<div id="filters">{selects}<button type="button" id="f-reset">reset</button>'
        f'<span><output id="count">{total}</output> of {total} cells shown</span></div>'
    )


def _table(df: pd.DataFrame, numbers: list[int | None]) -> str:
    tds = []
    for cell, model, target, kind, verdict, reason, override, n in zip(
        df["cell"].tolist(),
        df["model"].tolist(),
        df["target"].tolist(),
        df["kind"].tolist(),
        df["verdict"].tolist(),
        df["reason"].tolist(),
        df["override"].tolist(),
        numbers,
        strict=True,
    ):
        title = f"{cell}\n{verdict}" + (f": {reason}" if reason else "") + (f" ({override})" if override else "")
        sup = f"<sup>{n}</sup>" if n else ""
        recipe = f' data-recipe="recipes/{_attr(cell)}/README.md"' if verdict in SERVING else ""
        tds.append(
            f'<td class="v-{_attr(verdict)}" tabindex="0" data-cell="{_attr(cell)}"{recipe} '
            f'data-model="{_attr(model)}" '
            f'data-target="{_attr(target)}" data-kind="{_attr(kind)}" data-verdict="{_attr(verdict)}" '
            f'title="{_attr(title)}">{SYMBOL[Verdict(verdict)]}{sup}</td>'
        )
    table = pivot(df, tds)
    kinds = dict(zip(df["stack"].tolist(), df["kind"].tolist(), strict=True))
    stacks = [str(s) for s in table.columns]  # pivot's column order: stack_order(df)
    head = "".join(
        f'<th scope="col" class="stack k-{_attr(kinds[s])}" data-stack="{_attr(s)}" data-kind="{_attr(kinds[s])}" '
        f'title="{_attr(s)} ({_attr(kinds[s])})"><span>{escape(s)}</span></th>'
        for s in stacks
    )
    body = []
    for (model, target), values in zip(table.index.tolist(), table.to_numpy().tolist(), strict=True):
        cells = "".join(v or '<td class="empty"></td>' for v in values)
        body.append(
            f'<tr><th scope="row" class="row model" title="{_attr(model)}">{escape(str(model))}</th>'
            f'<th scope="row" class="row target">{escape(str(target))}</th>{cells}</tr>'
        )
    return (
        '<div class="scroll"><table id="readiness"><thead><tr>'
        f'<th scope="col" class="row model">model</th><th scope="col" class="row target">target</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _notes(notes: Mapping[str, int]) -> str:
    items = "".join(f'<li id="fn-{n}" value="{n}">{escape(text)}</li>' for text, n in notes.items())
    return f'<section id="footnotes"><h2>Footnotes</h2><ol class="notes">{items}</ol></section>' if notes else ""


def _declared_vs_observed(df: pd.DataFrame) -> str:
    """The runtime tier's cells: the static prediction beside the observation, as the Markdown report shows."""
    observed = observed_rows(df)
    if not observed:
        return ""
    rows = "".join(
        f"<tr><td>{escape(o.cell)}</td><td>{escape(o.declared)}</td><td>{escape(o.observed)}</td>"
        f"<td>{escape(o.reason)}</td><td>{'⚠' if o.contradiction else ''}</td></tr>"
        for o in observed
    )
    return (
        '<section id="declared-vs-observed"><h2>Declared vs observed</h2>'
        "<p>Cells the runtime tier ran: the static prediction beside what was observed (⚠ = contradicts).</p>"
        '<table class="dvo"><thead><tr><th>cell</th><th>declared</th><th>observed</th><th>reason</th><th></th></tr>'
        f"</thead><tbody>{rows}</tbody></table></section>"
    )


def render_html(report: Report) -> str:
    df = report.df
    numbers, notes = footnotes(df)
    if df.empty:
        main = '<p id="no-cells">no cells</p>' + _filters(df)
    else:
        main = _filters(df) + _table(df, numbers) + _notes(notes) + _declared_vs_observed(df)
    title = escape(report.title)
    kinds = ", ".join(f'<span class="kk k-{k}">{k}</span>' for k in StackKind)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{title}</title><style>{CSS}</style></head>\n'
        f"<body><h1>{title}</h1>{_summary(df)}"
        f"<p>Rows: model &times; target. Columns: stacks, their top border the kind: "
        f"{kinds}. Click a cell for its evidence.</p>"
        f"{main}\n"
        f'<div class="top">{_legend(df)}{_run(report.meta)}</div>\n'
        '<aside id="evidence" hidden aria-label="evidence"><header><h2 id="ev-cell"></h2>'
        '<button type="button" id="ev-close">close</button></header><div id="ev-body"></div></aside>\n'
        f'<script type="application/json" id="data">{_data(report, numbers)}</script>\n'
        f"<script>{JS}</script></body></html>\n"
    )

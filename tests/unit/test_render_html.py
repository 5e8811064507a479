"""The HTML report without a browser: its structure, its escaping, its embedded evidence and its determinism."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any

from stackmatrix.domain import CellResult, Outcome, Reason, StackKind, Status, Verdict
from stackmatrix.ladder.verdict import decided
from stackmatrix.reports.html import render_html
from stackmatrix.reports.legend import SYMBOL
from stackmatrix.reports.render import render
from stackmatrix.reports.table import Report, footnotes, stack_order

VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "col", "wbr", "source"})
META = {
    "run_id": "20260101T000000Z-abcdef",
    "tool_version": "0.1.0",
    "matrix": "/m/default.toml",
    "matrix_hash": "4e731a4e251f6884",
    "tier": "static",
    "cells_selected": 6,
    "cells_written": 6,
    "host": {"hostname": "vm", "platform": "Linux", "python": "3.11.7"},
    "started": "2026-01-01T00:00:00Z",
    "finished": "2026-01-01T00:00:02Z",
    "duration_s": 2.5,
    "status": "complete",
}


class Page(HTMLParser):
    """Every element with its attributes and its text (descendants included), in document order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[int] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, []))
        if tag not in VOID:
            self._open.append(len(self.elements) - 1)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self.elements[self._open.pop()][0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for i in self._open:
            self.elements[i][2].append(data)

    def find(self, tag: str | None = None, **attrs: str) -> list[tuple[dict[str, str], str]]:
        return [
            (a, "".join(text))
            for t, a, text in self.elements
            if (tag is None or t == tag) and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def options(self, select_id: str) -> list[str]:
        """The option values of one select: the options that follow it, up to the next select."""
        start = next(i for i, (t, a, _) in enumerate(self.elements) if t == "select" and a.get("id") == select_id)
        values = []
        for tag, attrs, _ in self.elements[start + 1 :]:
            if tag == "select":
                break
            if tag == "option":
                values.append(attrs["value"])
        return values

    def by_id(self, element_id: str) -> tuple[dict[str, str], str]:
        (found,) = self.find(id=element_id)
        return found


def outcome(name: str, status: Status = Status.PASS, reason: Reason | None = None, **kw: Any) -> Outcome:
    return Outcome(name, status, reason, **kw)


RESOLVE = outcome(
    "resolve", detail="vllm 0.22.1 admits transformers 5.5.0", evidence={"python": "3.12"}, duration_s=0.01
)


def cell(
    stack: str,
    kind: StackKind,
    model: str,
    target: str,
    verdict: Verdict,
    reason: Reason | None = None,
    outcomes: tuple[Outcome, ...] = (RESOLVE,),
    override: str | None = None,
) -> CellResult:
    slug = model.rsplit("/", 1)[-1].lower()
    declared: Mapping[str, str | None] = {
        "kind": str(kind),
        "triton": None if kind is StackKind.VLLM else "26.03",
        "vllm": "0.22.1",
        "transformers": "5.5.0",
        "python": "3.12",
        "model": model,
        "target": target,
    }
    return decided(CellResult(f"{stack}__{slug}__{target}", verdict, reason, override, outcomes, "f" * 20, declared))


def sample() -> list[CellResult]:
    arch = outcome(
        "arch",
        Status.FAIL,
        Reason.ARCH_UNSUPPORTED,
        detail="vllm 0.18.1's model registry has no Gemma4ForConditionalGeneration",
        evidence={"registered": 119, "closest": ["Gemma3ForConditionalGeneration"]},
        duration_s=0.0003,
    )
    fit = outcome("fit", Status.FAIL, Reason.DOES_NOT_FIT, detail="needs 60.1 GiB per GPU of 21.6", duration_s=0.0002)
    conflict = outcome(
        "resolve",
        Status.FAIL,
        Reason.RESOLVE_CONFLICT,
        detail="vllm pins transformers<5",
        override="transformers==5.5.0",
    )
    e4b, big = "google/gemma-4-E4B-it", "google/gemma-4-31B-it"
    tv, v, tp = StackKind.TRITON_VLLM, StackKind.VLLM, StackKind.TRITON_PYTHON
    return [
        cell("vllm-0.22.1-tf5.5.0", v, e4b, "l4x1", Verdict.PREDICTED),
        cell("vllm-0.22.1-tf5.5.0", v, big, "l4x1", Verdict.NO_FIT, Reason.DOES_NOT_FIT, (RESOLVE, fit)),
        cell("vllm-0.18.1-tf5.5.0", v, e4b, "l4x1", Verdict.BLOCKED, Reason.ARCH_UNSUPPORTED, (RESOLVE, arch)),
        cell("vllm-0.18.1-tf5.5.0", v, e4b, "h100x1", Verdict.BLOCKED, Reason.ARCH_UNSUPPORTED, (RESOLVE, arch)),
        cell(
            "triton-26.03",
            tv,
            e4b,
            "h100x1",
            Verdict.OVERRIDE,
            Reason.RESOLVE_CONFLICT,
            (conflict,),
            "transformers==5.5.0",
        ),
        cell("tpy-26.03", tp, big, "h100x1", Verdict.RUNS_TINY, None, (RESOLVE, outcome("serve", duration_s=9.5))),
    ]


def report(results: list[CellResult] | None = None, meta: Mapping[str, Any] = META) -> Report:
    return Report.of(sample() if results is None else results, meta)


def data_of(page: Page) -> dict[str, Any]:
    ((_, text),) = page.find("script", id="data", type="application/json")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def test_table_cells_carry_their_cell_and_the_markdown_footnote_numbers() -> None:
    rep = report()
    page = Page(render_html(rep))
    tds = page.find("td", tabindex="0")
    assert len(tds) == len(rep.results)
    numbers, notes = footnotes(rep.df)
    by_cell = {a["data-cell"]: (a, text) for a, text in tds}
    for r, n in zip(rep.results, numbers, strict=True):
        attrs, text = by_cell[r.cell_id]
        assert attrs["data-model"] == r.declared["model"] and attrs["data-target"] == r.declared["target"]
        assert attrs["data-kind"] == r.declared["kind"] and attrs["data-verdict"] == str(r.verdict)
        assert attrs["class"] == f"v-{r.verdict}" and r.cell_id in attrs["title"]
        assert text == SYMBOL[r.verdict] + (str(n) if n else "")
        # a cell that serves links the recipe that runs it (its panel says how to write it there)
        serving = r.verdict in (Verdict.SERVES, Verdict.RUNS_TINY, Verdict.PREDICTED, Verdict.OVERRIDE)
        assert attrs.get("data-recipe") == (f"recipes/{r.cell_id}/README.md" if serving else None)
    assert [text for a, text in page.find("li") if a.get("id", "").startswith("fn-")] == list(notes)
    # columns: the stacks in the Markdown order; rows: model x target, sorted; a missing cell is an empty slot
    assert [a["data-stack"] for a, _ in page.find("th", scope="col") if "data-stack" in a] == stack_order(rep.df)
    models = [text for a, text in page.find("th", scope="row") if "model" in a["class"]]
    targets = [text for a, text in page.find("th", scope="row") if "target" in a["class"]]
    assert list(zip(models, targets, strict=True)) == sorted(
        {(r.declared["model"], r.declared["target"]) for r in rep.results}
    )
    assert len(page.find("td", **{"class": "empty"})) == len(models) * len(stack_order(rep.df)) - len(tds)


def test_filters_offer_every_value_with_stable_ids_and_the_count_starts_at_all() -> None:
    rep = report()
    page = Page(render_html(rep))
    for key, expected in {
        "model": sorted({str(r.declared["model"]) for r in rep.results}),
        "target": sorted({str(r.declared["target"]) for r in rep.results}),
        "kind": [str(k) for k in StackKind],
        "verdict": [str(v) for v in Verdict],
    }.items():
        assert page.options(f"f-{key}") == ["", *expected]
    assert page.by_id("count")[1] == str(len(rep.results))
    assert page.by_id("evidence")[0].get("hidden") == "" and page.find(id="ev-cell")


def test_legend_says_predicted_is_declared_and_only_runs_tiny_and_serves_are_observed() -> None:
    page = Page(render_html(report()))
    rows = {a["data-verdict"]: text for a, text in page.find("tr") if "data-verdict" in a}
    assert list(rows) == [str(v) for v in Verdict]
    assert "declared only" in rows["predicted"] and "declared only" in rows["override"]
    assert "observed" in rows["serves"] and "observed" in rows["runs-tiny"]
    legend = page.by_id("legend")[1]
    assert "predicted is declared only" in legend and "are observed" in legend


def test_run_metadata_is_a_definition_list_of_every_key_nested_included() -> None:
    meta = {**META, "extra_key": [1, "two"], "note": None}
    page = Page(render_html(report(meta=meta)))
    run = page.by_id("run")[1]
    terms = [text for _, text in page.find("dt")]
    for key in [*meta, "hostname", "platform", "python"]:
        assert key in terms
    for value in ("20260101T000000Z-abcdef", "4e731a4e251f6884", "/m/default.toml", "2.5", "1, two", "3.11.7"):
        assert value in run


def test_evidence_is_embedded_once_per_distinct_outcome_and_rebuilds_every_cell() -> None:
    rep = report()
    data = data_of(Page(render_html(rep)))
    distinct = {json.dumps(o.to_json(), sort_keys=True) for r in rep.results for o in r.outcomes}
    assert len(data["outcomes"]) == len(distinct) < sum(len(r.outcomes) for r in rep.results)
    numbers, _ = footnotes(rep.df)
    for row, r, n in zip(data["cells"], rep.results, numbers, strict=True):
        c = dict(zip(data["fields"], row, strict=True))
        assert (c["cell"], c["verdict"], c["reason"], c["override"]) == (
            r.cell_id,
            str(r.verdict),
            str(r.reason) if r.reason else None,
            r.override,
        )
        assert c["note"] == n and c["fingerprint"] == r.fingerprint
        assert [data["outcomes"][i] for i in c["probes"]] == [o.to_json() for o in r.outcomes]
        assert {**data["pins"][c["pins"]], "model": c["model"], "target": c["target"]} == dict(r.declared)


def test_everything_from_the_data_is_escaped() -> None:
    nasty = '<img src=x onerror="alert(1)">&amp;\'"'
    bad = outcome(
        "arch",
        Status.FAIL,
        Reason.ARCH_UNSUPPORTED,
        detail="</script><script>alert(2)</script> & <!-- x",
        evidence={"log": "</SCRIPT></script><!--", "quote": "\"'&<>"},
    )
    results = [
        cell(
            "vllm-0.22.1-tf5.5.0",
            StackKind.VLLM,
            f"google/{nasty}",
            "l4x1",
            Verdict.BLOCKED,
            Reason.ARCH_UNSUPPORTED,
            (bad,),
        )
    ]
    html = render_html(report(results, meta={**META, "matrix": nasty}))
    assert "<img" not in html and "alert(2)</script>" not in html and "<!-- x" not in html
    page = Page(html)
    assert page.find("td", data_model=f"google/{nasty}")  # the attribute reads back as the raw value
    ((_, script),) = page.find("script", id="data")
    assert "</" not in script and "<!--" not in script
    data = data_of(page)
    assert data["outcomes"][0]["detail"] == bad.detail and data["outcomes"][0]["evidence"] == dict(bad.evidence)
    assert bad.detail in page.by_id("footnotes")[1] and nasty in page.by_id("run")[1]
    assert len(page.find("script")) == 2 and len(page.find("img")) == 0


def test_self_contained_nothing_to_fetch() -> None:
    page = Page(render_html(report()))
    for tag, attrs, _ in page.elements:
        for key in ("src", "href", "action", "srcset"):
            assert attrs.get(key, "data:").startswith("data:"), (tag, attrs)
    ((csp, _),) = page.find("meta", http_equiv="Content-Security-Policy")
    assert "default-src 'none'" in csp["content"]


def test_same_report_same_bytes_whatever_the_input_order() -> None:
    results = sample()
    first = render_html(report(results))
    shuffled = results[:]
    random.Random(7).shuffle(shuffled)
    assert render_html(report(shuffled)) == first == render_html(report(results))
    assert render(report(results), "html") == first.encode()


def test_empty_run_renders_a_page_without_a_table() -> None:
    page = Page(render_html(report([])))
    assert page.by_id("no-cells") and not page.find("table", id="readiness") and page.by_id("count")[1] == "0"
    assert data_of(page)["cells"] == []


def test_cells_the_runtime_ran_show_declared_beside_observed() -> None:
    rep = report()
    page = Page(render_html(rep))
    section = page.by_id("declared-vs-observed")[1]
    tiny = next(r for r in rep.results if r.verdict is Verdict.RUNS_TINY)
    assert tiny.cell_id in section and "runs-tiny" in section and "predicted" in section
    assert all(r.cell_id not in section for r in rep.results if r is not tiny)  # nothing else was observed


def test_the_page_opens_on_the_answer_and_keeps_the_run_collapsed_below() -> None:
    """Title, one summary line, then the table; the run's record (upstream's release lists left out) is a closed
    <details> after it."""
    rep = report(meta={**META, "upstream": {"vllm": [{"version": "0.1.0", "uploaded": "2023-06-20"}]}})
    html = render_html(rep)
    page = Page(html)
    summary = page.by_id("summary")[1]
    counts = {v: sum(r.verdict is v for r in rep.results) for v in Verdict}
    expected = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    assert summary.startswith(f"{len(rep.results)} cells: {expected}")
    assert html.index('id="summary"') < html.index('id="readiness"') < html.index('id="run"')
    details = page.by_id("run")[0]
    assert "open" not in details
    assert "upstream" not in [text for _, text in page.find("dt")] and "2023-06-20" not in html

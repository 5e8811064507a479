"""The HTML report of a real stored run, driven in a real headless Chromium: filters, evidence on click, screenshot."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, sync_playwright

from stackmatrix.cli.main import main
from stackmatrix.reports.render import render
from stackmatrix.reports.table import Report
from stackmatrix.store.runs import open_run
from tests.records import records

pytestmark = [pytest.mark.browser, pytest.mark.network]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; CI installs it. Playwright never downloads a browser here.
# No outside network on the test hosts: without these Chromium stalls on refused connections (updates, sync, QUIC).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SELECTION = "e4b-it__ and (vllm-0.22.1 or vllm-0.18.1 or triton-26.03)"
VISIBLE = "#readiness td[data-cell]:visible"


@pytest.fixture(scope="module")
def stored(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real run by the tool itself, rendered from the store: (run dir, readiness.html)."""
    reports = tmp_path_factory.mktemp("reports")
    code = main(["run", "--cache-dir", str(cache_dir), "--reports-dir", str(reports), "--quiet", "-k", SELECTION])
    assert code == 0
    (run_dir,) = (reports / "runs").iterdir()
    run = open_run(run_dir)
    page = reports / "readiness.html"
    page.write_bytes(render(Report.of(list(run.results()), run.meta), "html"))
    return run_dir, page


def cells_of(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The stored cell records as written (the run's journal), read without the library: what the page must
    agree with."""
    return records(run_dir)


def visible(page: Page) -> list[dict[str, str]]:
    found: list[dict[str, str]] = page.locator(VISIBLE).evaluate_all("els => els.map((e) => ({...e.dataset}))")
    return found


def test_filters_and_evidence_in_a_real_browser(stored: tuple[Path, Path], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); CI installs it")
    run_dir, html = stored
    cells = cells_of(run_dir)
    blocked = {c: d for c, d in cells.items() if d["verdict"] == "blocked"}
    assert blocked, "the selection is chosen to hold blocked cells"
    # the model x target with the most blocked cells, to combine with the verdict filter
    (model, target), in_pair = Counter(
        (d["declared"]["model"], d["declared"]["target"]) for d in blocked.values()
    ).most_common(1)[0]

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if _is_error(m) else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(_url(r)))
            page.goto(html.as_uri())
            table = page.locator("#readiness").bounding_box()
            assert table is not None and table["y"] <= 1000, table  # the answer on the first screen, 1600x1000
            assert page.locator("details#run").get_attribute("open") is None  # the run's record: collapsed
            assert page.text_content("#summary").startswith(f"{len(cells)} cells: ")  # type: ignore[union-attr]

            assert page.text_content("#count") == str(len(cells)) == str(len(visible(page)))

            page.select_option("#f-verdict", "blocked")
            shown = visible(page)
            assert {c["verdict"] for c in shown} == {"blocked"}
            assert sorted(c["cell"] for c in shown) == sorted(blocked)
            assert page.text_content("#count") == str(len(blocked))

            page.select_option("#f-model", model)
            page.select_option("#f-target", target)
            shown = visible(page)
            assert all((c["model"], c["target"], c["verdict"]) == (model, target, "blocked") for c in shown)
            assert len(shown) == in_pair and page.text_content("#count") == str(in_pair)
            assert page.locator("#readiness tbody tr:visible").count() == 1  # the rows left empty are gone
            assert page.locator("#readiness th.stack:visible").count() == in_pair  # and so are the empty columns

            cell = shown[0]["cell"]
            stored_cell = cells[cell]
            page.locator(f'#readiness td[data-cell="{cell}"]').click()
            panel = page.locator("#evidence")
            assert panel.is_visible()
            assert page.text_content("#ev-cell") == cell
            text = panel.inner_text()
            deciding = next(p for p in stored_cell["probes"] if p["reason"] == stored_cell["reason"])
            assert stored_cell["reason"] in text and deciding["detail"] in text
            probes = panel.locator(".probe")
            assert probes.count() == len(stored_cell["probes"])
            for i, probe in enumerate(stored_cell["probes"]):
                box = probes.nth(i)
                assert box.get_attribute("data-probe") == probe["name"] and probe["status"] in box.inner_text()
                assert json.loads(box.locator("pre").inner_text()) == probe["evidence"]

            assert panel.locator("a.recipe").count() == 0  # a blocked cell has no recipe
            green = next(c for c, rec in cells.items() if rec["verdict"] in ("predicted", "runs-tiny", "serves"))
            page.click("#f-reset")  # a cell that serves (vLLM 0.22.1's): its panel links its recipe and its command
            page.locator(f'#readiness td[data-cell="{green}"]').click()
            assert panel.locator("a.recipe").get_attribute("href") == f"recipes/{green}/README.md"
            assert f"stackmatrix recipe {green} --run " in panel.locator("pre.recipe-command").inner_text()

            shot = tmp_path / "readiness.png"
            page.screenshot(path=str(shot))
            page.click("#ev-close")
            assert not panel.is_visible()
            page.click("#f-reset")
            assert page.text_content("#count") == str(len(cells))
        finally:
            browser.close()

    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert errors == []
    assert requests == [html.as_uri()], "the page must fetch nothing but itself"


def _is_error(message: ConsoleMessage) -> bool:
    return message.type == "error"


def _url(request: Request) -> str:
    return request.url

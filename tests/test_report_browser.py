"""The exported report in real headless Chromium, offline: every chart drawn, no JS errors."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from test_reporting import figures_shown, make_sweep

from workbench.lab.report import export

pytestmark = [pytest.mark.browser, pytest.mark.kernels]

CHROMIUM = Path("/usr/bin/chromium")
# Headless flags verified on these machines; Playwright manages the profile
# directory itself and refuses --user-data-dir in args.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DRAWN = """n => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  return plots.length === n && plots.every(gd => gd.querySelector('.main-svg'));
}"""
INSPECT = """() => ({
  plotly: typeof window.Plotly,
  plots: [...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
    svg: gd.querySelectorAll('.main-svg').length, traces: (gd.data || []).length,
    notes: ((gd.layout && gd.layout.annotations) || []).length,
    title: (gd.layout && gd.layout.title && gd.layout.title.text) || ''})),
  headings: [...document.querySelectorAll('h2')].map(h => h.textContent.replace('¶', '')),
  tables: [...document.querySelectorAll('table')].map(t => {
    const height = t.getBoundingClientRect().height;
    let clipped = false;  // an ancestor that scrolls or hides part of the table
    for (let el = t.parentElement; el; el = el.parentElement) {
      const style = getComputedStyle(el);
      if (style.overflowY !== 'visible' && el.clientHeight + 1 < height) clipped = true;
    }
    return {id: t.id, rows: t.rows.length, height, clipped};
  }),
})"""


def need_browser() -> None:
    """Skip without Chromium or Playwright locally; fail in CI, which must run this test."""
    problem = None if CHROMIUM.exists() else f"{CHROMIUM} missing (run .ci/install-browser.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = problem or "python playwright is not installed"
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test: {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The HTML report of the synthetic sweep and how many figures its notebook shows."""
    need_browser()
    sweep_dir = make_sweep(tmp_path_factory.mktemp("sweep"))
    html = export.build_report(sweep_dir, timeout=120)
    return html, figures_shown(nbformat.read(sweep_dir / "report.ipynb", as_version=4))


def test_report_renders_offline_in_chromium(report: tuple[Path, int], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    html, shown = report
    errors: list[str] = []
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS, env=env)
        try:
            page = browser.new_context(offline=True).new_page()
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("console", lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"))
            page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
            page.goto(html.as_uri(), wait_until="load")
            page.wait_for_function(DRAWN, arg=shown, timeout=20_000)
            state = page.evaluate(INSPECT)
        finally:
            browser.close()
    assert shown == 10  # no robustness section: the sweep varies neither aggregator nor attack
    assert state["plotly"] == "object"
    assert len(state["plots"]) == shown
    for plot in state["plots"]:  # data, or a note saying why there is none (no attack swept)
        assert plot["svg"] >= 1 and (plot["traces"] >= 1 or plot["notes"] >= 1), plot
    assert sum(plot["traces"] >= 1 for plot in state["plots"]) == 10
    assert any("rank × μ" in p["title"] for p in state["plots"])
    assert state["headings"][0] == "Verdict"
    tables = {t["id"]: t for t in state["tables"]}
    assert {"T_verdict-accuracy", "T_verdict-costs", "T_configurations", "T_diagnostics"} <= set(tables)
    for table in tables.values():
        assert table["height"] > 0 and not table["clipped"], table
    assert tables["T_configurations"]["rows"] == 1 + 6  # header + every configuration
    assert errors == []

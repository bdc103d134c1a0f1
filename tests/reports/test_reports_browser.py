"""report.html opened from file:// in headless Chromium: no JS errors, figures drawn, a page that is not blank.

Needs Debian's `chromium` (setup installs it); skipped with the reason when no Chromium is found.
"""

import importlib.util

import pytest
from reports_chromium import Chromium, find_chromium, image_stats
from reports_synth import (
    EVIL,
    nanohead_rows,
    scaling_rows,
    softmax1_rows,
    toeplitz_rows,
    vocab_depth_rows,
    write_optuna,
    write_study,
)

from reports.build import build_report

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary on PATH (Debian: apt-get install chromium)"
)


def rendered(html_path):
    """JS that is true once every figure div in the page has its SVG drawn."""
    n = html_path.read_text().count("Plotly.newPlot(")
    return (
        f"document.querySelectorAll('.js-plotly-plot').length === {n} && "
        "Array.from(document.querySelectorAll('.js-plotly-plot')).every(p => p.querySelector('.main-svg'))"
    )


@pytest.fixture(scope="module")
def browser():
    b = Chromium(CHROMIUM)
    yield b
    b.close()


@pytest.fixture(scope="module")
def nanohead_page(tmp_path_factory, browser):
    d = write_study(
        tmp_path_factory.mktemp("results"),
        f"nano{EVIL}",
        nanohead_rows(),
        family="nanohead",
        baseline="p0",
        samples={"p0": [f"once {EVIL}"]},
    )
    out = build_report(d, png=False)
    since = len(browser.events)
    session = browser.open(out["html"].resolve().as_uri(), settle_js=rendered(out["html"]))
    return out, session, since


def test_renders_without_js_errors(browser, nanohead_page):
    out, session, since = nanohead_page
    assert browser.errors() == []
    assert not [e for e in browser.events[since:] if e.get("method") == "Page.javascriptDialogOpening"]  # no alert()


def test_every_figure_is_drawn(browser, nanohead_page):
    out, session, _ = nanohead_page
    expected = out["html"].read_text().count("Plotly.newPlot(")
    assert expected >= 5
    drawn = "Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p => p.querySelector('.main-svg g.trace')).length"
    assert browser.eval(session, drawn) == expected
    assert browser.eval(session, "document.querySelectorAll('.scatterlayer .point').length") > 15  # the trials' markers


def test_hostile_names_are_text_in_the_dom(browser, nanohead_page):
    _, session, _ = nanohead_page
    assert browser.eval(session, "document.querySelector('h1').textContent") == f"Study nano{EVIL}"
    scripts = browser.eval(
        session, "Array.from(document.scripts).map(s => s.textContent.includes('alert(1)')).filter(Boolean).length"
    )
    assert scripts == 0
    assert EVIL in browser.eval(session, "document.getElementById('failures').textContent")


def test_trials_table_filters_and_sorts(browser, nanohead_page):
    _, session, _ = nanohead_page
    visible = """(function(q){ var i = document.querySelector('input.filter'); i.value = q;
        i.dispatchEvent(new Event('input'));
        return Array.from(document.querySelectorAll('#trials-table tbody tr')).filter(r => r.style.display !== 'none').length; })"""
    assert browser.eval(session, visible + "('failed')") == 2
    assert browser.eval(session, visible + "('p40 done')") == 3
    assert browser.eval(session, visible + "('')") == 18
    # click the val_bpb header: ascending, the best trial (a p40) first, failed (empty) last
    first = """(function(){ var ths = Array.from(document.querySelectorAll('#trials-table thead th'));
        var i = ths.findIndex(t => t.textContent === 'val_bpb'); ths[i].click();
        var rows = document.querySelectorAll('#trials-table tbody tr');
        return [rows[0].cells[1].textContent, rows[rows.length - 1].cells[i].textContent]; })()"""
    assert browser.eval(session, first) == ["p40", ""]
    assert browser.errors() == []  # the handlers threw nothing


def test_screenshot_is_not_blank(browser, nanohead_page, tmp_path):
    _, session, _ = nanohead_page
    png = browser.screenshot(session)
    (tmp_path / "report.png").write_bytes(png)
    stats = image_stats(browser, png)
    assert stats["width"] == browser.width
    assert stats["nonwhite"] > 0.03 and stats["colours"] > 100, stats


def test_every_family_renders(browser, tmp_path):
    root = tmp_path
    dirs = [
        write_study(
            root,
            "softmax1_ab",
            softmax1_rows(),
            family="softmax1",
            baseline="softmax",
            samples={"softmax": ["a"], "softmax1": ["b"]},
        ),
        write_study(root, "toeplitz_flags", toeplitz_rows(), family="toeplitz", baseline="mean_proj"),
        write_study(root, "vocab_depth", vocab_depth_rows(), family="vocab_depth"),
        write_study(root, "scaling", scaling_rows(), family="scaling"),
    ]
    search = write_study(root, "nanohead_search", nanohead_rows(failed=False, evil=False), family="nanohead_search")
    write_optuna(search, "nanohead_search", n_trials=10)
    for d in dirs + [search]:
        out = build_report(d, png=False)
        before = len(browser.errors())
        s = browser.open(out["html"].resolve().as_uri(), settle_js=rendered(out["html"]))
        assert browser.errors()[before:] == [], d.name
        assert browser.eval(s, "document.querySelectorAll('.js-plotly-plot').length") == out["html"].read_text().count(
            "Plotly.newPlot("
        ), d.name


@pytest.mark.skipif(importlib.util.find_spec("kaleido") is None, reason="kaleido not installed (pip install kaleido)")
def test_png_export(browser, tmp_path):
    d = write_study(tmp_path, "pngs", nanohead_rows(failed=False, evil=False), family="nanohead", baseline="p0")
    out = build_report(d, png=True)
    names = {p.name for p in out["pngs"]}
    assert {"frontier.png", "nanohead.png", "configs.png", "differences.png"} <= names and "curves.png" not in names
    stats = image_stats(browser, (d / "frontier.png").read_bytes())
    assert (stats["width"], stats["height"]) == (1500, 520)
    assert stats["nonwhite"] > 0.005 and stats["colours"] > 50, stats

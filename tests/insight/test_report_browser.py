"""``prep report``'s page in a real browser: headless Chromium, driven by Selenium through chromedriver.

Each page is opened from its file (``file://``), as a person double-clicking it would, with the
browser's console and network logs on: no console message, no request but the page itself (and
the ``data:`` thumbnails it holds), the numbers of the tables those of the stats file, one
chart per channel, both files' series in a comparison, the copy button's text, and file names
made of markup shown as text with nothing run. A screenshot of each page is written where CI
keeps artefacts: ``$PREP_ARTIFACTS``, else ``tests-artifacts/`` (git-ignored).

Skipped, with one reason, where selenium (the ``test`` extra), Chromium or chromedriver is
missing (``apt-get install chromium chromium-driver``; ``PREP_CHROMIUM`` and
``PREP_CHROMEDRIVER`` name other binaries).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import prep
from helpers.report_data import BROKEN, IMG, NOTES, SCRIPT, cell_text, expected_cells, hostile_stats
from prep.insight.report_page import report

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PREP_ARTIFACTS") or REPO / "tests-artifacts")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH = 1100


def _binaries() -> tuple[str | None, str | None]:
    chromium = os.environ.get("PREP_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    return chromium, os.environ.get("PREP_CHROMEDRIVER") or shutil.which("chromedriver")


def _why_no_browser() -> str | None:
    missing = []
    try:
        import selenium.webdriver  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    chromium, driver = _binaries()
    if chromium is None:
        missing.append("chromium")
    if driver is None:
        missing.append("chromedriver")
    if not missing:
        return None
    return f"needs a headless browser: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"


NO_BROWSER = _why_no_browser()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(NO_BROWSER is not None, reason=NO_BROWSER or "")]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _binaries()
    options = Options()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(60)
    try:
        chrome.execute_cdp_cmd(
            "Browser.grantPermissions", {"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}
        )
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The reports of the shipped sample, of the sample against a dirty folder, and of the dirty
    folder alone (file names made of markup; labelled with markup too)."""
    root = tmp_path_factory.mktemp("browser")
    sample = root / "sample.json"
    prep.compute_stats("sample", workers=0, progress=False).save(sample)
    _, dirty, csv = hostile_stats(root)
    out = {
        "sample": report(sample, root / "sample.html"),
        "compare": report([sample, dirty], root / "compare.html", labels=["sample", "dirty"]),
        "hostile": report(dirty, root / "hostile.html", labels=[SCRIPT], per_image=[csv]),
    }
    return {**out, "sample.json": sample, "dirty.json": dirty}


def _open(browser, path: Path) -> tuple[list[str], list[dict]]:
    """Load ``path``; the URLs the page asked for and the console's messages."""
    browser.get_log("browser")  # what earlier pages left
    browser.get_log("performance")
    browser.get(path.as_uri())
    events = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    return urls, browser.get_log("browser")


def _assert_offline(path: Path, urls: list[str], console: list[dict]) -> None:
    assert urls and urls[0] == path.as_uri()
    assert [u for u in urls[1:] if not u.startswith("data:image/")] == []
    assert console == []  # no error, no warning, no CSP violation


def _screenshot(browser, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(WIDTH, min(int(height) + 160, 16000))
    target = ARTIFACTS / name
    browser.save_screenshot(str(target))
    browser.set_window_size(WIDTH, 900)
    assert target.stat().st_size > 10_000
    return target


def test_the_sample_page_works_offline_with_the_file_s_numbers(browser, pages):
    path = pages["sample"]
    urls, console = _open(browser, path)
    _assert_offline(path, urls, console)
    data = json.loads(pages["sample.json"].read_text())
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.channels td[data-value]'))"
        ".map(td => [td.dataset.field, Number(td.dataset.channel), td.dataset.value, td.textContent])"
    )
    cells = {(field, channel): (value, text) for field, channel, value, text in shown}
    expected = expected_cells(data)
    assert set(cells) == set(expected)
    for key, value in expected.items():
        assert (int if isinstance(value, int) else float)(cells[key][0]) == value, key
        assert cells[key][1] == cell_text(value), key
    charts = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.chart.histogram'))"
        ".map(svg => [svg.dataset.channel, svg.getBoundingClientRect().width])"
    )
    assert [name for name, _ in charts] == ["R", "G", "B"] and all(width > 300 for _, width in charts)
    _screenshot(browser, "report-sample.png")


def test_the_copy_button_copies_the_normalize_line(browser, pages):
    _open(browser, pages["sample"])
    line = prep.load_stats(pages["sample.json"]).normalize_line()
    from selenium.webdriver.common.by import By

    assert browser.find_element(By.ID, "normalize-0").text == line
    button = browser.find_element(By.CSS_SELECTOR, 'button.copy[data-copy="normalize-0"]')
    assert button.is_displayed()  # the page's script ran (the CSP admits it by its hash) and showed it
    button.click()
    from selenium.webdriver.support.ui import WebDriverWait

    read = "return document.querySelector('.copy-status').textContent"
    # the clipboard's promise settles after the click returns: wait for the status, 5 s at most
    WebDriverWait(browser, 5).until(lambda b: b.execute_script(read) != "")
    status = browser.execute_script(read)
    assert status in ("copied", "selected: press Ctrl+C (Cmd+C) to copy")
    if status == "copied":
        pasted = browser.execute_async_script(
            "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('error: ' + e))"
        )
        assert pasted == line
    else:  # no clipboard here: the text is selected instead
        assert browser.execute_script("return String(window.getSelection())") == line


def test_the_log_axis_is_one_click_away(browser, pages):
    _open(browser, pages["sample"])
    shown = "return Array.from(document.querySelectorAll(arguments[0])).map(g => getComputedStyle(g).display)"
    assert set(browser.execute_script(shown, "svg .scale-log")) == {"none"}
    assert "none" not in browser.execute_script(shown, "svg .scale-linear")
    browser.find_element("css selector", 'label[for="scale-log"]').click()
    assert set(browser.execute_script(shown, "svg .scale-linear")) == {"none"}
    assert "none" not in browser.execute_script(shown, "svg .scale-log")


def test_two_files_overlay_both_series_and_highlight_the_drift(browser, pages):
    path = pages["compare"]
    urls, console = _open(browser, path)
    _assert_offline(path, urls, console)
    series = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.chart.histogram')).map(svg =>"
        " Array.from(svg.querySelectorAll('.scale-linear path.series')).map(p =>"
        " [p.dataset.file, p.getBoundingClientRect().width > 100]))"
    )
    assert series == [[["0", True], ["1", True]]] * 3
    legend = browser.execute_script("return Array.from(document.querySelectorAll('.legend')).map(l => l.textContent)")
    assert [x.strip() for x in legend[0].split("\n") if x.strip()] == ["sample", "dirty"]
    comparison = prep.compare_stats(pages["sample.json"], pages["dirty.json"])
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.compare tr[data-channel]')).map(tr =>"
        " [tr.className, Number(tr.querySelector('[data-field=mean_shift]').dataset.value),"
        " getComputedStyle(tr.querySelector('td')).backgroundColor])"
    )
    assert [shift for _, shift, _ in rows] == list(comparison.mean_shift)
    failing = [abs(d) > comparison.max_shift for d in comparison.mean_shift]
    assert any(failing) and [cls == "fail" for cls, _, _ in rows] == failing
    assert {colour for cls, _, colour in rows if cls == "fail"} == {"rgb(253, 236, 234)"}
    assert len(browser.find_elements("css selector", "table.channels")) == 2
    _screenshot(browser, "report-compare.png")


def test_names_made_of_markup_are_shown_and_never_run(browser, pages):
    path = pages["hostile"]
    urls, console = _open(browser, path)
    _assert_offline(path, urls, console)  # an injected script or handler would also be a CSP error here
    probe = browser.execute_script(
        "return {pwned: typeof window.__pwned, title: document.title,"
        " scripts: document.scripts.length, handlers: document.querySelectorAll('[onerror], [onload]').length,"
        " x: document.querySelectorAll('img[src=x], b').length,"
        " skipped: Array.from(document.querySelectorAll('.skipped-files code')).map(c => c.textContent),"
        " names: Array.from(document.querySelectorAll('figure.thumb figcaption')).map(c => c.textContent)}"
    )
    assert probe["pwned"] == "undefined"
    assert probe["title"] == f"prep report: {SCRIPT}"
    assert probe["scripts"] == 1 and probe["handlers"] == 0 and probe["x"] == 0
    assert sorted(probe["skipped"]) == sorted([f"{BROKEN}.jpg", f"{NOTES}.txt"])
    assert (
        f"{SCRIPT}.png" in probe["names"] and f"{IMG}.png" in probe["names"] and "a/constant été.png" in probe["names"]
    )
    thumbnails = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure.thumb img')).map(i => i.complete && i.naturalWidth > 0)"
    )
    assert thumbnails and all(thumbnails)
    assert len(browser.find_elements("css selector", "svg.chart.distribution")) == 1
    _screenshot(browser, "report-hostile.png")


def test_the_checks_would_see_a_request_even_a_blocked_one(browser, tmp_path):
    """The checks above are not vacuous: a page that loads an image from the network shows the
    request, and under the report's CSP the attempt still shows, with the CSP error in the console."""
    image = '<img src="http://127.0.0.1:9/prep-report-probe.png">'
    policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    for name, head in (
        ("open.html", ""),
        ("closed.html", f'<meta http-equiv="Content-Security-Policy" content="{policy}">'),
    ):
        page = tmp_path / name
        page.write_text(f"<!DOCTYPE html>{head}<title>t</title>{image}")
        urls, console = _open(browser, page)
        assert "http://127.0.0.1:9/prep-report-probe.png" in urls
        assert any("Content Security Policy" in entry["message"] for entry in console) == bool(head)

"""The dashboard in a real headless browser (Debian's chromium + chromedriver, driven by selenium,
a test-only dependency): during a run with the fake agents it shows the tracks and their live
output, a click retries a failed feature, a live session page keeps streaming, and a session with
100,000 events loads without the page growing without bound. Screenshots go to tests/artifacts/.

Without chromium the tests FAIL with a clear message, unless AO_SKIP_BROWSER=1 (then they skip)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import pytest

from projects import REPO_ROOT, feature, load_features, make_project
from test_server import TWO_TRACKS, Daemon

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def browser():
    missing = _browser_missing()
    if missing:
        if os.environ.get("AO_SKIP_BROWSER") == "1":
            pytest.skip(f"browser test skipped (AO_SKIP_BROWSER=1): {missing}")
        pytest.fail(f"the dashboard browser test needs a headless chromium: {missing}; "
                    "set AO_SKIP_BROWSER=1 to skip it", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ao-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                  and "favicon" not in e["message"] and "/api/" not in e["message"]]
        assert not errors, f"JavaScript errors in the dashboard: {errors}"
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(driver, predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # stale element while the view re-renders: try again
            last_exc = exc
        time.sleep(0.1)
    path = ARTIFACTS / f"timeout-{what.replace(' ', '-')[:40]}.png"
    driver.save_screenshot(str(path))
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (screenshot {path}); last error: {last_exc}")


def css(driver, selector):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def click(driver, selector: str, what: str) -> None:
    """Click the element matching selector; the live views may re-render it meanwhile: retry."""
    from selenium.common.exceptions import StaleElementReferenceException

    def attempt():
        try:
            found = css(driver, selector)
            if not found:
                return False
            found[0].click()
            return True
        except StaleElementReferenceException:
            return False
    wait(driver, attempt, what=what)


def test_dashboard_during_a_run(git_repo, fakes_on_path, monkeypatch, tmp_path, browser):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"match": "feature #2:", "scenario": "crash", "times": 1}]))
    monkeypatch.setenv("FAKE_AGENT_SCENARIO", str(rules))
    monkeypatch.setenv("FAKE_AGENT_STATE_DIR", str(tmp_path / "fake-state"))
    monkeypatch.setenv("FAKE_AGENT_DELAY", "1.5")
    make_project(git_repo, [feature(1), feature(2), feature(3, category="ui"), feature(4, category="ui")],
                 tracks=TWO_TRACKS, agent={"maxRetries": 0})
    d = Daemon(git_repo).start()
    try:
        driver = browser
        driver.get(d.url)
        wait(driver, lambda: len(css(driver, "article.track")) == 2, what="two track cards")
        assert [c.get_attribute("data-track") for c in css(driver, "article.track")] == ["core", "ui"]
        wait(driver, lambda: "live" in css(driver, "#connection")[0].get_attribute("class"), what="live connection")

        click(driver, "#btn-start", "the start button")
        wait(driver, lambda: css(driver, "#run-state")[0].text == "running", what="running state")
        for track in ("core", "ui"):
            wait(driver, lambda: css(driver, f'article.track[data-track="{track}"] .tail .line'),
                 what=f"live output of {track}")
        wait(driver, lambda: "#" in css(driver, 'article.track[data-track="core"] .track-feature')[0].text,
             what="current feature on the core card")
        driver.save_screenshot(str(ARTIFACTS / "dashboard-overview.png"))

        d.wait_for(lambda: load_features(git_repo)[2]["status"] == "failed", what="feature 2 to fail")
        driver.get(d.url + "#/features")
        row = '#features-table tr[data-id="2"]'
        wait(driver, lambda: css(driver, f'{row}[data-status="failed"]'), what="feature 2 failed in the table")
        assert "failed" in css(driver, row)[0].text
        monkeypatch.setenv("FAKE_AGENT_DELAY", "3")
        click(driver, f'{row} button[data-action="retry"]', "the retry button")
        wait(driver, lambda: load_features(git_repo)[2]["status"] in ("open", "in_progress"), what="retry accepted")

        running = d.wait_for(lambda: d.request("GET", "/api/sessions?feature=2&status=running")[2]["sessions"],
                             what="the retried session to start")
        driver.get(d.url + f"#/sessions/{running[0]['id']}")
        wait(driver, lambda: css(driver, "#events .ev"), what="events of the live session")
        wait(driver, lambda: "succeeded" in css(driver, "#session-head h1")[0].text, timeout=40,
             what="the live session page to see its end")
        wait(driver, lambda: css(driver, "#events .ev-result"), what="the result event streamed in")
        d.wait_for(lambda: load_features(git_repo)[2]["status"] == "passed", what="feature 2 to pass after retry")

        driver.get(d.url + "#/features")
        wait(driver, lambda: css(driver, f'{row}[data-status="passed"]'), what="feature 2 passed in the table")

        click(driver, "#btn-add-feature", "the add button")
        dialog = wait(driver, lambda: css(driver, "dialog#feature-dialog[open]"), what="the add form")[0]
        dialog.find_element("css selector", 'input[name="name"]').send_keys("Added from the browser")
        dialog.find_element("css selector", 'input[name="category"]').send_keys("ui")
        dialog.find_element("css selector", 'textarea[name="steps"]').send_keys("Open the page\nSee it")
        dialog.find_element("css selector", 'input[name="dependsOn"]').send_keys("999")
        dialog.find_element("css selector", "#feature-save").click()
        wait(driver, lambda: "999" in dialog.find_element("css selector", ".form-errors").text,
             what="the validation problem shown in the form")
        dialog.find_element("css selector", 'input[name="dependsOn"]').clear()
        dialog.find_element("css selector", "#feature-save").click()
        wait(driver, lambda: css(driver, '#features-table tr[data-id="5"]'), what="the added feature in the table")
        added = load_features(git_repo)[5]
        assert added["name"] == "Added from the browser" and added["steps"] == ["Open the page", "See it"]
        click(driver, '#features-table button[data-action="edit"][data-id="5"]', "the edit button")
        dialog = wait(driver, lambda: css(driver, "dialog#feature-dialog[open]"), what="the edit form")[0]
        dialog.find_element("css selector", 'textarea[name="description"]').send_keys("Edited in the browser.")
        dialog.find_element("css selector", "#feature-save").click()
        wait(driver, lambda: load_features(git_repo)[5].get("description") == "Edited in the browser.",
             what="the edit written to features.json")
        assert load_features(git_repo)[5]["name"] == "Added from the browser"

        ok = d.request("GET", "/api/sessions?feature=1")[2]["sessions"][-1]
        driver.get(d.url + f"#/sessions/{ok['id']}")
        wait(driver, lambda: css(driver, "#events details.ev-tool"), what="a folded tool call")
        tool = css(driver, "#events details.ev-tool")[0]
        assert tool.get_attribute("open") is None
        tool.find_element("css selector", "summary").click()
        assert "input" in tool.text.lower() and "result" in tool.text.lower()
        assert css(driver, "#events .ev-text") and css(driver, "#events .ev-result")
        driver.save_screenshot(str(ARTIFACTS / "dashboard-session.png"))

        driver.get(d.url + "#/sessions")
        wait(driver, lambda: len(css(driver, "#sessions-table tbody tr")) >= 5, what="session history")
        driver.get(d.url + "#/config")
        wait(driver, lambda: css(driver, "#config-table td"), what="the configuration table")
        assert "baseBranch" in css(driver, "#config-table")[0].text

        driver.set_window_size(390, 844)
        driver.get(d.url + "#/overview")
        wait(driver, lambda: len(css(driver, "article.track")) == 2, what="cards at phone width")
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 392
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        driver.save_screenshot(str(ARTIFACTS / "dashboard-phone-dark.png"))
        dark_bg = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert dark_bg != "rgb(247, 248, 250)"
    finally:
        d.stop()


def test_session_page_with_100000_events_stays_bounded(git_repo, fakes_on_path, browser):
    make_project(git_repo, [feature(1)])
    from agent_orchestrator.db import Database

    db = Database(git_repo / ".orchestrator" / "orchestrator.db")
    try:
        sid = db.create_session(feature_id=1, track="core", phase="implement", agent="claude", attempt=1,
                                prompt="# Implement feature #1: Feature 1", cwd=str(git_repo), started_at=time.time())
        rows = []
        for i in range(1, 100_001):
            if i % 3 == 1:
                ev = {"kind": "tool_call", "text": "Bash", "data": {"id": f"t{i}", "name": "Bash", "input": {"command": f"echo {i}"}}}
            elif i % 3 == 2:
                ev = {"kind": "tool_result", "text": str(i), "data": {"id": f"t{i - 1}", "is_error": i % 300 == 2, "output": f"{i - 1}"}}
            else:
                ev = {"kind": "text", "text": f"step {i}: done", "data": {}}
            data = {"session_id": sid, "feature_id": 1, "track": "core", "event": ev}
            rows.append((i, "output", sid, json.dumps(data), time.time()))
        db.insert_events(rows)
        db.update_session(sid, status="succeeded", ended_at=time.time())
    finally:
        db.close()

    d = Daemon(git_repo).start()
    try:
        driver = browser
        started = time.monotonic()
        driver.get(d.url + f"#/sessions/{sid}")
        wait(driver, lambda: css(driver, "#event-count")[0].text == "100,000 events", timeout=120,
             what="all 100,000 events loaded")
        seconds = time.monotonic() - started
        nodes = driver.execute_script("return document.querySelectorAll('#events .ev').length")
        assert nodes < 5000, f"{nodes} event nodes in the DOM: off-screen chunks were not released"
        driver.execute_script("window.scrollTo(0, document.documentElement.scrollHeight / 2)")
        middle = wait(driver, lambda: driver.execute_script(
            "return [...document.querySelectorAll('#events .ev-text')].filter(e => {"
            " const r = e.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; })"
            ".map(e => Number(e.textContent.match(/step (\\d+)/)[1]))"), what="events rendered mid-way")
        assert all(20_000 < n < 80_000 for n in middle), middle
        driver.execute_script("window.scrollTo(0, document.documentElement.scrollHeight)")
        wait(driver, lambda: "step 99999: done" in driver.execute_script(
            "return [...document.querySelectorAll('#events .ev-text')].map(e => e.textContent).join('|')"),
            what="the last events rendered after scrolling to the end")
        assert css(driver, "#events details.ev-tool.is-error")
        driver.save_screenshot(str(ARTIFACTS / "dashboard-session-100k.png"))
        print(f"100,000 events loaded in {seconds:.1f}s with {nodes} event nodes in the DOM")
    finally:
        d.stop()


def test_connection_indicator_reconnects_after_a_daemon_restart(git_repo, fakes_on_path, browser):
    make_project(git_repo, [feature(1)])
    d = Daemon(git_repo).start()
    port = d.port
    driver = browser
    try:
        driver.get(d.url)
        wait(driver, lambda: "conn-live" in css(driver, "#connection")[0].get_attribute("class"), what="live")
    finally:
        d.stop()
    wait(driver, lambda: "conn-live" not in css(driver, "#connection")[0].get_attribute("class"),
         what="the indicator to show the lost connection")
    d2 = Daemon(git_repo, port=port).start()
    try:
        wait(driver, lambda: "conn-live" in css(driver, "#connection")[0].get_attribute("class"), timeout=40,
             what="the indicator to reconnect on its own")
        assert d2.request("POST", "/api/tracks/core/pause", {"reason": "after restart"})[0] == 200
        wait(driver, lambda: css(driver, 'article.track[data-track="core"] .badge.phase-paused'),
             what="an event after the restart to reach the page")
    finally:
        d2.stop()

"""The dashboard in headless Chromium (Debian's chromium + chromedriver, driven by selenium) for
bench/api.py: how long a view takes to become usable.

"Usable" is measured inside the page. A script installed before the page's own scripts
(Page.addScriptToEvaluateOnNewDocument) checks the view's condition in every animation frame
and records `performance.now()` - milliseconds since the navigation started - at the first frame
in which it holds. A requestAnimationFrame callback only runs when the main thread is free to
render, so at that moment the content is on screen and the page can take input. The conditions:

- overview (`#/overview`): the run state is in the header, the totals tiles are drawn, there is
  one card per track, the Start button is enabled (the status is loaded and the daemon is
  controllable) and the live connection is open (the event stream is connected);
- session page (`#/sessions/N`): the session's metadata is drawn (its heading) and the event list
  fills the window (its last drawn event reaches the bottom of the window) or every event is
  loaded. "All events loaded" is when its counter reads "100,000 events" (no longer "loading").

For each load it also records when the whole 100,000-event list was loaded (session page), the
longest main-thread task in the first seconds (PerformanceObserver "longtask": how long the page
could not react to input at worst), and the number of DOM elements.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

PROBE = r"""
(() => {
  const probe = { usableAt: null, loadedAt: null, longTasks: [], frames: 0 };
  window.__aoProbe = probe;
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) probe.longTasks.push([Math.round(e.startTime), Math.round(e.duration)]);
    }).observe({ type: 'longtask', buffered: true });
  } catch (err) { probe.longTaskError = String(err); }
  const q = (s) => document.querySelector(s);
  const qa = (s) => document.querySelectorAll(s);
  function usable() {
    const hash = location.hash || '#/overview';
    if (hash.startsWith('#/overview')) {
      const state = q('#run-state');
      const start = q('#btn-start');
      return state && state.textContent !== '…' && qa('#totals .tile').length >= 5 &&
        qa('article.track').length === __TRACKS__ && start && !start.disabled && q('#connection.conn-live');
    }
    if (hash.startsWith('#/sessions/')) {
      const evs = qa('#events .ev');
      if (!q('#session-head h1') || !evs.length) return false;
      return loaded() || evs[evs.length - 1].getBoundingClientRect().bottom >= innerHeight;
    }
    return false;
  }
  function loaded() {
    const counter = q('#event-count');
    return counter && counter.textContent === '__LOADED__';
  }
  function frame() {
    probe.frames += 1;
    try {
      if (probe.usableAt === null && usable()) probe.usableAt = performance.now();
      if (probe.loadedAt === null && location.hash.startsWith('#/sessions/') && loaded()) {
        probe.loadedAt = performance.now();
        probe.loadedText = q('#event-count').textContent;
      }
    } catch (err) { probe.error = String(err); }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
})();
"""


def browser_missing() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


class Browser:
    def __init__(self, tracks: int, loaded_text: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="ao-bench-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--user-data-dir={self.profile}", "--window-size=1280,900"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(60)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                    {"source": PROBE.replace("__TRACKS__", str(tracks)).replace("__LOADED__", loaded_text)})

    def version(self) -> str:
        caps = self.driver.capabilities
        return f"{caps.get('browserName')} {caps.get('browserVersion')}"

    def measure(self, url: str, *, wait_loaded: bool = False, timeout: float = 120) -> dict:
        """Load `url` afresh; {usable_ms, loaded_ms, longest_task_ms, dom_nodes, ...}."""
        driver = self.driver
        driver.get("about:blank")
        driver.get(url)
        deadline = time.monotonic() + timeout
        probe = {}
        while time.monotonic() < deadline:
            probe = driver.execute_script("return window.__aoProbe") or {}
            if probe.get("usableAt") is not None and (not wait_loaded or probe.get("loadedAt") is not None):
                break
            time.sleep(0.05)
        time.sleep(1.0)  # long tasks just after "usable" count too
        probe = driver.execute_script("return window.__aoProbe") or {}
        usable = probe.get("usableAt")
        window_end = (usable or 0) + 3000
        tasks = [d for start, d in probe.get("longTasks", []) if start <= window_end]
        return {
            "usable_ms": round(usable, 1) if usable is not None else None,
            "loaded_ms": round(probe["loadedAt"], 1) if probe.get("loadedAt") is not None else None,
            "loaded_text": probe.get("loadedText"),
            "longest_task_ms": max(tasks, default=0),
            "long_tasks": len(tasks),
            "dom_nodes": driver.execute_script("return document.getElementsByTagName('*').length"),
            "event_nodes": driver.execute_script("return document.querySelectorAll('#events .ev').length"),
            "error": probe.get("error") or probe.get("longTaskError"),
        }

    def errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"
                and "favicon" not in e["message"]]

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

"""The fleet page in headless Chromium against a real cortex (issue 19 item 4).

The page (crates/cortex-gateway/src/ui/fleet.html) must render the real fleet
that GET /admin/fleet reports, and its Load button must really load a model
(checked through /admin/fleet, not through the page). A screenshot is kept
under $CORTEX_TEST_ARTIFACTS (default bench-results/test-artifacts/, which git
ignores) whether the test passes or not.

Needs Debian's `chromium` and `chromium-driver` (CHROMIUM / CHROMEDRIVER
override the paths) and selenium (tests/sdk/requirements.txt). Without them
the test fails when CI is set and skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

# Where the gateway serves the page.
PAGE_PATH = "/ui"

REPO = Path(__file__).resolve().parents[2]
LOAD_TIMEOUT_S = 120.0
RENDER_TIMEOUT_S = 15.0

# No sandbox (containers), no GPU, and nothing that talks to the network on
# its own: the test must work offline.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _missing(msg: str):
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def _fleet(base: str) -> dict:
    with _NO_PROXY.open(base + "/admin/fleet", timeout=10) as resp:
        return json.loads(resp.read())


def _post(base: str, path: str) -> dict:
    req = urllib.request.Request(
        base + path, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with _NO_PROXY.open(req, timeout=LOAD_TIMEOUT_S) as resp:
        return json.loads(resp.read())


def _artifacts() -> Path:
    d = Path(os.environ.get("CORTEX_TEST_ARTIFACTS") or REPO / "bench-results" / "test-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (tests/sdk/requirements.txt)")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        _missing("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    # A fixed driver path: selenium never tries to download one.
    b = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield b
    finally:
        b.quit()


def _wait(what: str, check, timeout: float):
    """Poll `check()` until it returns something truthy; fail with `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as e:  # noqa: BLE001 (the page is re-rendering)
            last = e
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}" + (f" (last error: {last!r})" if last else ""),
                pytrace=False)


def _row(browser, model: str):
    from selenium.webdriver.common.by import By

    for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-model]"):
        if row.get_attribute("data-model") == model:
            return row
    return None


def _states(browser, model: str) -> list[str]:
    from selenium.webdriver.common.by import By

    row = _row(browser, model)
    if row is None:
        return []
    return [s.get_attribute("data-state") for s in row.find_elements(By.CSS_SELECTOR, "[data-state]")]


def check_page(browser, base: str, model: str, screenshot: Path) -> None:
    """Open the page on `base`, check it shows the fleet, load `model` with
    its button, and check the load through /admin/fleet."""
    from selenium.webdriver.common.by import By

    try:
        browser.get(base + PAGE_PATH)
        assert browser.title == "cortex fleet"
        _wait(f"a row for {model}", lambda: _row(browser, model), RENDER_TIMEOUT_S)

        # The real fleet: every node (with one memory bar per device) and
        # every model the gateway reports.
        fleet = _fleet(base)
        assert fleet["nodes"], "the e2e fleet has at least one neuron"
        for node in fleet["nodes"]:
            cards = [c for c in browser.find_elements(By.CSS_SELECTOR, "article[data-node]")
                     if c.get_attribute("data-node") == node["name"]]
            assert len(cards) == 1, node["name"]
            bars = cards[0].find_elements(By.CSS_SELECTOR, "[role=meter]")
            assert len(bars) == len(node["devices"]), node["name"]
            for bar, dev in zip(bars, node["devices"]):
                assert int(bar.get_attribute("aria-valuemax")) == dev["memory_budget_bytes"]
        for m in fleet["models"]:
            row = _row(browser, m["id"])
            assert row is not None, m["id"]
            # Its kind and, when known, its context window.
            facts = row.find_element(By.CSS_SELECTOR, "[data-facts]").text
            assert facts.startswith(m["kind"]), (m["id"], facts)
            if m.get("context_length"):
                assert f"{m['context_length']:,}-token context" in facts, (m["id"], facts)
        model_facts = _row(browser, model).find_element(By.CSS_SELECTOR, "[data-facts]").text
        assert "8,192-token context" in model_facts, model_facts
        assert _states(browser, model) == ["unloaded"], _states(browser, model)
        assert "error" not in (browser.find_element(By.ID, "error").text or "").lower()

        # Load it with the page's button.
        button = _row(browser, model).find_element(By.CSS_SELECTOR, "button[data-action=load]")
        assert button.is_enabled()
        button.click()

        def ready_in_fleet():
            entry = next(m for m in _fleet(base)["models"] if m["id"] == model)
            return [p for p in entry["placements"] if p["state"] == "ready"]

        placements = _wait(f"{model} ready in /admin/fleet", ready_in_fleet, LOAD_TIMEOUT_S)
        _wait(f"the page to show {model} ready", lambda: "ready" in _states(browser, model),
              RENDER_TIMEOUT_S)
        notice = browser.find_element(By.ID, "notice").text
        assert f"Loaded {model} on {placements[0]['node']}" in notice, notice
        assert browser.find_element(By.ID, "error").text == ""
    finally:
        browser.save_screenshot(str(screenshot))


def test_fleet_page_shows_the_fleet_and_loads_a_model(cortex_url, model_id, browser):
    # Start from a known state: the model loaded nowhere.
    _post(cortex_url, f"/admin/models/{model_id}/unload")
    check_page(browser, cortex_url, model_id, _artifacts() / "fleet-page.png")

"""Issue 9's promise, checked in a real browser: Debian's Chromium, headless,
driven by Selenium, against `--demo`. The page lists every demo target and a
failing job of the demo data, and a target whose simulator starts refusing
the exporter shows as down after the next poll, without JavaScript."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from exporter.simulators import SIMULATORS
from tests.harness import ExporterProcess

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Logged by exporter/demo.py at start: `msg="demo simulator started" vendor=keepit url=http://...`.
SIMULATOR_LINE = re.compile(r'msg="demo simulator started" .*?vendor=(\w+) url=(\S+)')
# Hang guards only: nothing asserts how long anything takes.
READY_WITHIN = 60.0
DOWN_WITHIN = 50.0


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    # `make test` installs both (Debian's chromium and chromium-driver): missing is a failure, not a skip.
    assert CHROMIUM.exists(), f"{CHROMIUM} missing: `make test` installs Debian's chromium"
    assert CHROMEDRIVER.exists(), f"{CHROMEDRIVER} missing: `make test` installs Debian's chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def simulator_urls(logs: str) -> dict[str, str]:
    return {vendor: url.strip('"') for vendor, url in SIMULATOR_LINE.findall(logs)}


def target_rows(driver: webdriver.Chrome) -> dict[str, str]:
    """Target name -> data-state, from the targets table."""
    rows = driver.find_elements(By.CSS_SELECTOR, "table#targets tr[data-target]")
    return {row.get_attribute("data-target") or "": row.get_attribute("data-state") or "" for row in rows}


def failed_jobs(driver: webdriver.Chrome) -> set[tuple[str, str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "table#jobs tr[data-job]")
    return {
        (row.get_attribute("data-target") or "", row.get_attribute("data-job") or "")
        for row in rows
        if "failed" in (row.get_attribute("data-problems") or "").split()
    }


async def next_to_poll(exporter: ExporterProcess) -> str:
    """The target polled soonest: faulting it keeps the wait for its next poll short."""
    status, body, _ = await exporter.get("/api/v1/status")
    assert status == 200
    targets = json.loads(body)["targets"]
    return str(min(targets, key=lambda t: t["next_poll"]["epoch"])["name"])


async def test_status_page_in_chromium_shows_targets_failures_and_a_target_going_down(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    exporter = ExporterProcess(tmp_path / "absent.yaml", tmp_path / "data", extra_args=["--demo"])
    await exporter.start()
    try:
        await exporter.wait_for(lambda status: status == 200, what="ready", within=READY_WITHIN)
        urls = simulator_urls(exporter.logs())
        assert set(urls) == set(SIMULATORS), exporter.logs()[-2000:]
        demo_targets = {f"{vendor}-demo" for vendor in SIMULATORS}

        browser.get(exporter.url + "/")
        assert "backup-exporter" in browser.title
        assert target_rows(browser) == dict.fromkeys(demo_targets, "up")
        # The demo data has, for every vendor, a job whose last run failed.
        failing = failed_jobs(browser)
        assert {target for target, _ in failing} == demo_targets, failing
        assert ("keepit-demo", "Salesforce Production") in failing

        victim = await next_to_poll(exporter)
        vendor = victim.removesuffix("-demo")
        async with (
            aiohttp.ClientSession() as session,
            session.post(urls[vendor] + "/_sim/fault", json={"mode": "401"}) as response,
        ):
            assert response.status == 200, await response.text()

        states = await _wait_until_down(browser, victim)
        assert states[victim] == "down"
        assert {name: state for name, state in states.items() if name != victim} == dict.fromkeys(
            demo_targets - {victim}, "up"
        )
        row = browser.find_element(By.CSS_SELECTOR, f'table#targets tr[data-target="{victim}"]')
        assert "DOWN" in row.text

        screenshot = tmp_path / "status.png"
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        await exporter.stop()


async def _wait_until_down(browser: webdriver.Chrome, target: str) -> dict[str, str]:
    """Reload the page until `target` shows as down (the page has no script that
    would update it); a hang guard, not a timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DOWN_WITHIN
    states: dict[str, str] = {}
    while loop.time() < deadline:
        browser.refresh()
        states = target_rows(browser)
        if states.get(target) == "down":
            return states
        await asyncio.sleep(0.5)
    raise AssertionError(f"{target} not shown down within {DOWN_WITHIN}s: {states}")

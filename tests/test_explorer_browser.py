"""The explorer as people use it: served by Voila (``python -m pvqae explore``) and driven
in a real headless Chromium (Selenium with Debian's ``chromium`` + ``chromium-driver``).

The test picks an image with the image slider, moves the temperature slider and forces a
level, and checks after each that the rendered figure (the PNG in the page) changed and that
no widget shows an error. The server runs on its own localhost port, bounded in time, and is
stopped at the end. Without Chromium the test skips, except under CI (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SERVER_TIMEOUT = 120  # seconds for Voila to answer
RENDER_TIMEOUT = 180  # seconds for the notebook to run and a figure to appear or change

pytestmark = pytest.mark.skipif(
    (CHROMIUM is None or CHROMEDRIVER is None) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def explorer_url(tiny_reports, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pvqae", "explore", "--reports", str(tiny_reports),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        # Wait for the pre-heated kernel (the notebook already run, no browser attached): a page
        # served from it cannot hit Voila's execute-while-connecting hang (see voila_command).
        # No probe request: it would take the pre-heated kernel itself.
        deadline = time.monotonic() + SERVER_TIMEOUT
        while "is filled with" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the explorer server did not pre-heat its kernel on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("CI must install chromium and chromium-driver (.ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # Voila streams the page while the kernel runs the notebook, so the load event can come
    # minutes late on a busy 2-core runner (chromedriver then fails get() with "Timed out
    # receiving message from renderer"); get() returns at once and the waits below bound the run.
    opts.page_load_strategy = "none"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(SERVER_TIMEOUT)
    yield driver
    driver.quit()


def _figure(driver) -> str:
    """The data URL of the first figure in the widgets' output ('' while there is none).

    Read in one script call: the kernel replaces the <img> on every redraw, so an element
    found in one call can be gone by the next (StaleElementReferenceException, seen in CI).
    """
    return driver.execute_script(
        "const img = document.querySelector('.widget-output img'); return img ? (img.src || '') : '';"
    ) or ""


def _wait_for_new_figure(driver, before: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def changed(d):
        src = _figure(d)
        return src if src.startswith("data:image/png") and src != before else False

    wait = WebDriverWait(driver, RENDER_TIMEOUT, poll_frequency=0.5,
                         ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(changed)


def _widget(driver, description: str):
    """The widget box whose label reads ``description``."""
    for box in driver.find_elements("css selector", ".widget-inline-hbox"):
        labels = box.find_elements("css selector", ".widget-label")
        if labels and labels[0].text.strip() == description:
            return box
    raise AssertionError(f"no widget labelled {description!r} in the page")


def _errors(driver) -> list[str]:
    stderr = driver.find_elements("css selector", "[data-mime-type='application/vnd.jupyter.stderr']")
    page = driver.find_element("tag name", "body").text
    return [e.text for e in stderr if e.text.strip()] + (["Traceback in the page"] if "Traceback" in page else [])


def test_explorer_page_reacts_to_its_widgets(explorer_url, browser):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.get(explorer_url)
    first = _wait_for_new_figure(browser, "")
    assert "def show_image(" not in browser.find_element("tag name", "body").text, "a Voila page shows no code"

    # pick another image: the image slider's handle, one step right
    _widget(browser, "image").find_element("css selector", ".noUi-handle").send_keys(Keys.ARROW_RIGHT)
    second = _wait_for_new_figure(browser, first)

    # move the temperature slider to its maximum: the routing is sampled, the maps change
    _widget(browser, "tau (0=argmax)").find_element("css selector", ".noUi-handle").send_keys(Keys.END)
    third = _wait_for_new_figure(browser, second)

    # force every patch to the fine level
    Select(_widget(browser, "force level").find_element("tag name", "select")).select_by_visible_text("fine")
    _wait_for_new_figure(browser, third)
    time.sleep(1)  # let the second figure of this update render too
    assert _errors(browser) == []
    shot = os.environ.get("PVQAE_EXPLORER_SCREENSHOT")  # e.g. reports/figures/explorer/explorer.png
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(shot)

"""What the web-UI browser tests share: the skip-or-fail rule, a served page on a free port, headless
chromium, polling and the download links. Selenium is imported only inside the functions, so a test
module can call `require_browser_packages()` before its own selenium imports."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import time

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def require(ok: bool, reason: str) -> None:
    """Skip the module when `ok` is false, except under CI, where the browser tests must run."""
    if not ok:
        if CI:
            pytest.fail(f"{reason}; CI must run the browser tests")
        pytest.skip(reason, allow_module_level=True)


def require_browser_packages() -> None:
    for name in ("gradio", "selenium"):
        require(importlib.util.find_spec(name) is not None, f"{name} is not installed (pip install -e '.[test]')")


def serve_on_free_port(demo):
    """Yields the URL of `demo` served on a free local port (closed afterwards); for fixtures."""
    from sds3d.app.ui import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve(demo, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}"
    demo.close()


def headless_chromium(window_size: str, *flags: str):
    """Yields a headless chromium WebDriver of `window_size` ("W,H") with extra `flags` (quit afterwards)."""
    from selenium import webdriver

    require(CHROMIUM is not None and CHROMEDRIVER is not None,
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # get() returns at DOMContentLoaded (the tests wait for the elements they use): waiting for the
    # full load event hung past the driver's 120 s after a refresh with Debian's chromium 150
    options.page_load_strategy = "eager"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={window_size}", *flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 120.0, what: str = "the page"):
    """The first truthy `condition()`, polled every 0.1 s; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def download_links(driver, elem_id: str) -> dict[str, str]:
    """File name -> download address of the links in the element `elem_id`, in the order shown."""
    from selenium.webdriver.common.by import By

    hrefs = [link.get_attribute("href") for link in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} a")]
    return {href.rsplit("/", 1)[-1]: href for href in hrefs if href}

"""Moved to bench/app_server.py (bench/ must not import tests/); kept for the browser tests' imports, with the
marks every browser test module carries (``pytestmark = BROWSER_MARKS``)."""

from pathlib import Path

import pytest

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, launch_browser, rss_mb, start_server, stop_server, wait_script_idle

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is missing: apt-get install -y chromium (the test never downloads a browser)"),
]

__all__ = ["BROWSER_MARKS", "CHROMIUM", "CHROMIUM_ARGS", "launch_browser", "rss_mb", "start_server", "stop_server",
           "wait_script_idle"]

"""Moved to bench/app_server.py (bench/ must not import tests/); kept for the browser tests' imports."""

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, launch_browser, rss_mb, start_server, stop_server, wait_script_idle

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "launch_browser", "rss_mb", "start_server", "stop_server", "wait_script_idle"]

"""The browser tests' shared server: `streamlit run app/main.py` on a free port with the repository's
pretrained models (or tiny ones trained for the test), one per test module.

A module sets ``GCCS_APP_FAST`` for its server by overriding the ``app_fast`` fixture; playwright is
imported only by the fixtures that need it, so the other system tests never depend on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from app_server import launch_browser, start_server, stop_server
from apptest import ROOT, make_pretrained


@pytest.fixture(scope="module")
def app_fast() -> str:
    """``GCCS_APP_FAST`` of the module's server: "" is the app as users get it."""
    return ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, app_fast: str) -> Iterator[str]:
    repo = ROOT / "pretrained"
    if all((repo / f"digits-{loss}.safetensors").exists() for loss in ("gccs", "ce")):
        pretrained = repo
    else:
        pretrained = tmp_path_factory.mktemp("browser-pretrained")
        make_pretrained(pretrained)
    env = {"GCCS_PRETRAINED_DIR": str(pretrained), "GCCS_USER_MODELS": str(tmp_path_factory.mktemp("browser-user")),
           "GCCS_APP_WARM_UMAP": "0", "GCCS_APP_FAST": app_fast}
    proc, url = start_server(ROOT / "app" / "main.py", env=env, log=tmp_path_factory.mktemp("log") / "server.log")
    yield url
    stop_server(proc)


def open_browser_page(pw, width: int = 1500, height: int = 1050):  # type: ignore[no-untyped-def]
    """A new page of a fresh chromium that records its page errors in ``page.page_errors``."""
    pg = launch_browser(pw).new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.page_errors = errors  # type: ignore[attr-defined]
    return pg


@pytest.fixture(scope="module")
def page(server: str):  # type: ignore[no-untyped-def]
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright_api.sync_playwright() as pw:
        pg = open_browser_page(pw)
        yield pg
        pg.context.browser.close()

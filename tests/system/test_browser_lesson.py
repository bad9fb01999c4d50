"""The Lesson page end to end in a real headless browser (Debian's chromium via playwright, never downloaded):
open /lesson?step=1 directly, walk all five steps with the Next button, check each step's chart is drawn and no
exception or "not found" text appears, and screenshot step 4 (``lesson.png``) to ``$GCCS_SCREENSHOT_DIR``
(default ``test-artifacts/screenshots``; the README's comes from ``GCCS_SCREENSHOT_DIR=docs/screenshots``).

Models: the repository's ``pretrained/`` when it holds digits-gccs, else tiny ones trained for the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from app_server import BROWSER_MARKS, launch_browser, wait_script_idle
from apptest import ROOT

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = BROWSER_MARKS
SHOTS = Path(os.environ.get("GCCS_SCREENSHOT_DIR", ROOT / "test-artifacts" / "screenshots"))
CHART = {1: "lesson_clean", 2: "lesson_weak", 3: "lesson_gaps", 4: "lesson_both", 5: "lesson_protocols"}


def _clean(page) -> None:  # type: ignore[no-untyped-def]
    assert page.get_by_test_id("stException").count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body and "not found" not in body.lower()
    assert page.page_errors == [], page.page_errors


def _chart_drawn(page, step: int) -> list[str]:  # type: ignore[no-untyped-def]
    sel = f".st-key-{CHART[step]} .js-plotly-plot"
    page.wait_for_selector(sel, timeout=90_000)
    page.wait_for_function(f"() => document.querySelector('{sel}')._fullData?.length > 0", timeout=30_000)
    return page.locator(sel).evaluate("el => el._fullData.map(t => t.name)")


def test_lesson_walks_through_every_step(server):  # type: ignore[no-untyped-def]
    with playwright_api.sync_playwright() as pw:
        browser = launch_browser(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1050})
        page.page_errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: page.page_errors.append(str(exc)))
        page.goto(f"{server}/lesson?step=1")
        page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=60_000)
        wait_script_idle(page, 120_000)
        for step in range(1, 6):
            page.get_by_text(f"Step {step} of 5").wait_for(timeout=90_000)
            names = _chart_drawn(page, step)
            wait_script_idle(page, 120_000)
            _clean(page)
            assert f"step={step}" in page.url
            if step in (1, 2, 4):
                assert any(n.startswith("boundary") for n in names), names
            if step == 3:
                assert "zero CE gradient" in names
            if step == 4:
                assert "moving 2" in names
                SHOTS.mkdir(parents=True, exist_ok=True)
                page.get_by_text("Step 4 of 5").evaluate("el => el.scrollIntoView({block: 'start'})")
                page.wait_for_timeout(300)
                page.screenshot(path=str(SHOTS / "lesson.png"))
            if step == 5:
                assert any(n.startswith("weak: ") for n in names) and any(n.startswith("strong: ") for n in names)
                page.get_by_text("Step 5 of 5").evaluate("el => el.scrollIntoView({block: 'start'})")
                page.wait_for_timeout(300)
                page.screenshot(path=str(SHOTS / "lesson-gap.png"))
                break
            page.locator(".st-key-lesson_next button").click()
            wait_script_idle(page, 120_000)
        browser.close()


def test_lesson_in_teacher_mode_on_a_projector(server):  # type: ignore[no-untyped-def]
    """Teacher mode: no sidebar, the Lesson in the top navigation, a step linked directly, large text."""
    with playwright_api.sync_playwright() as pw:
        browser = launch_browser(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.page_errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: page.page_errors.append(str(exc)))
        page.goto(f"{server}/lesson?step=4&teacher=1")
        page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=60_000)
        wait_script_idle(page, 120_000)
        page.get_by_text("Step 4 of 5").wait_for(timeout=90_000)
        assert "moving 2" in _chart_drawn(page, 4)
        wait_script_idle(page, 120_000)
        _clean(page)
        assert not page.get_by_test_id("stSidebar").is_visible()
        assert page.get_by_role("link", name="Lesson").count() >= 1
        size = page.locator(".lesson-text p").first.evaluate("el => parseFloat(getComputedStyle(el).fontSize)")
        assert size >= 22, size
        page.get_by_text("Step 4 of 5").evaluate("el => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "lesson-teacher.png"))
        browser.close()

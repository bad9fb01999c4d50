"""In headless chromium (Debian's, via playwright): the app in the browser's dark colour scheme draws its figures
with the dark ink on a dark background (screenshot docs/screenshots/latent-dark.png with
GCCS_SCREENSHOT_DIR=docs/screenshots); the Train page's Stop button ends a run after the current epoch; a digit
drawn on the Draw page's canvas lands in both latent spaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from app_server import BROWSER_MARKS, launch_browser, wait_script_idle
from apptest import ROOT

from app import figures

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = BROWSER_MARKS
SHOTS = Path(os.environ.get("GCCS_SCREENSHOT_DIR", ROOT / "test-artifacts" / "screenshots"))


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as pw:
        b = launch_browser(pw)
        yield b
        b.close()


def new_page(browser, scheme: str):
    return browser.new_page(viewport={"width": 1500, "height": 1050}, color_scheme=scheme)


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=60_000)
    wait_script_idle(page)
    assert page.get_by_test_id("stException").count() == 0


def star_outline(page, key: str) -> str:
    return page.locator(f".st-key-{key} .js-plotly-plot").evaluate(
        "el => el._fullData.find(t => t.name === 'simplex vertices').marker.line.color")


def luminance(css: str) -> float:
    """Relative brightness 0..1 of an ``rgb(r, g, b)`` / ``rgba(...)`` / ``#rrggbb`` colour."""
    if css.startswith("#"):
        rgb = [int(css[i : i + 2], 16) for i in (1, 3, 5)]
    else:
        rgb = [float(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
    return (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255


def test_dark_scheme_draws_figures_with_the_dark_ink(browser, server):
    page = new_page(browser, "dark")
    open_page(page, server)
    page.wait_for_selector(".st-key-latent_left .js-plotly-plot .scatterlayer .trace .point", timeout=60_000)
    app_bg = page.evaluate("getComputedStyle(document.querySelector('[data-testid=stApp]')).backgroundColor")
    assert luminance(app_bg) < 0.2, app_bg  # Streamlit followed the browser's dark preference
    if star_outline(page, "latent_left") != figures.INKS["dark"].text:  # the first run may not know the theme yet
        page.reload()
        wait_script_idle(page)
        page.wait_for_selector(".st-key-latent_left .js-plotly-plot .scatterlayer .trace .point", timeout=60_000)
    assert star_outline(page, "latent_left") == figures.INKS["dark"].text
    paper = page.locator(".st-key-latent_left .js-plotly-plot").evaluate("el => el._fullLayout.paper_bgcolor")
    font = page.locator(".st-key-latent_left .js-plotly-plot").evaluate("el => el._fullLayout.font.color")
    assert luminance(font) > luminance(paper) + 0.4, (font, paper)  # light text on a dark chart
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "latent-dark.png"))
    light = new_page(browser, "light")
    open_page(light, server)
    light.wait_for_selector(".st-key-latent_left .js-plotly-plot .scatterlayer .trace .point", timeout=60_000)
    assert star_outline(light, "latent_left") == figures.INKS["light"].text
    light.close()
    page.close()


def test_dark_scheme_attack_animation_styles_itself_for_the_dark_page(browser, server):
    """The animation is drawn with theme=None (figures.PageFigure): its own layout, not Streamlit's template, must
    give it light text on the dark page, panel titles included, with tick labels inside the chart."""
    page = new_page(browser, "dark")
    open_page(page, f"{server}/attack?n_samples=10&steps=4&eps=0.2&attack=pgd&samples=random")
    page.reload()  # the first run may not know the browser's theme yet
    wait_script_idle(page)
    page.locator(".st-key-run_attack button").click()
    page.wait_for_selector("text=Computed in", timeout=120_000)
    wait_script_idle(page)
    chart = page.locator(".st-key-attack_anim .js-plotly-plot")
    chart.locator(".scatterlayer .trace .point").first.wait_for(timeout=60_000)
    app_bg = page.evaluate("getComputedStyle(document.querySelector('[data-testid=stApp]')).backgroundColor")
    font = chart.evaluate("el => el._fullLayout.font.color")
    assert chart.evaluate("el => el._fullLayout.paper_bgcolor").replace(" ", "") == "rgba(0,0,0,0)"  # the dark page shows through
    assert luminance(font) > luminance(app_bg) + 0.4, (font, app_bg)
    titles = chart.evaluate("el => el._fullLayout.annotations.map(a => a.font.color)")
    assert titles and all(luminance(c) > 0.6 for c in titles), titles
    ticks = chart.evaluate("el => Array.from(el.querySelectorAll('.ytick text')).map(t => t.getBoundingClientRect().left"
                           " - el.getBoundingClientRect().left)")
    assert ticks and min(ticks) >= 0, ticks  # no tick label cut at the chart's left edge
    SHOTS.mkdir(parents=True, exist_ok=True)
    chart.screenshot(path=str(SHOTS / "attack-dark.png"))
    page.close()


def test_stop_ends_a_run_after_the_current_epoch(browser, server):
    page = new_page(browser, "light")
    open_page(page, f"{server}/train")
    page.locator(".st-key-tr_epochs input").fill("50")
    page.locator(".st-key-tr_name input").fill("browser-stop")
    page.locator(".st-key-train_start button").click()
    page.locator(".st-key-train_stop button").wait_for(timeout=60_000)
    page.locator(".st-key-live_latent .js-plotly-plot").wait_for(timeout=60_000)  # one epoch done, drawn live
    page.locator(".st-key-train_stop button").click()
    page.get_by_text("stopped after").wait_for(timeout=120_000)
    text = page.inner_text("body")
    assert "of 50 epochs" in text and "Saved" in text
    page.locator(".st-key-train_continue button").wait_for(timeout=10_000)
    page.close()


def test_a_drawn_digit_lands_in_both_latent_spaces(browser, server):
    page = new_page(browser, "light")
    open_page(page, f"{server}/draw")
    canvas = page.locator(".st-key-draw_canvas canvas").last
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] / 2, box["y"] + 40
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 21):  # a vertical stroke: a one
        page.mouse.move(x0, y0 + i * 10)
    page.mouse.up()
    page.locator(".st-key-draw_latent_left .js-plotly-plot").wait_for(timeout=60_000)
    page.locator(".st-key-draw_latent_right .js-plotly-plot").wait_for(timeout=60_000)
    names = page.locator(".st-key-draw_latent_left .js-plotly-plot").evaluate("el => el._fullData.map(t => t.name)")
    assert "your picture" in names
    assert page.inner_text("body").count("predicts") == 2
    assert page.get_by_test_id("stException").count() == 0
    page.close()

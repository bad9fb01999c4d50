"""End to end in a real headless browser: Debian's chromium driven by playwright (no browser download).

Starts `streamlit run app/main.py` on a free port, opens every page, runs an attack and plays its
animation, trains a tiny model, uploads a bad file, and checks that no page shows an exception.
Screenshots of the latent and attack pages go to ``$GCCS_SCREENSHOT_DIR`` (default
``test-artifacts/screenshots``; the README's come from ``GCCS_SCREENSHOT_DIR=docs/screenshots``).

Models: the repository's ``pretrained/`` when it holds digits-gccs and digits-ce, else tiny ones
trained for the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from app_server import BROWSER_MARKS, wait_script_idle
from apptest import ROOT

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = BROWSER_MARKS
SHOTS = Path(os.environ.get("GCCS_SCREENSHOT_DIR", ROOT / "test-artifacts" / "screenshots"))
PLOT_POINTS = ".js-plotly-plot .scatterlayer .trace .point"


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("[data-testid='stAppViewContainer']", timeout=60_000)
    wait_script_idle(page)
    assert_clean(page)


def assert_clean(page) -> None:
    assert page.get_by_test_id("stException").count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body and "Error:" not in body.replace("st.error", "")


def test_latent_page_draws_both_models_and_inspects_a_point(page, server):
    open_page(page, server)
    page.wait_for_selector(f".st-key-latent_left {PLOT_POINTS}", timeout=60_000)
    page.wait_for_selector(f".st-key-latent_right {PLOT_POINTS}", timeout=60_000)
    names = page.locator(".st-key-latent_left .js-plotly-plot").evaluate("el => el._fullData.map(t => t.name)")
    assert "simplex vertices" in names and "Gaussian 0" in names
    right = page.locator(".st-key-latent_right .js-plotly-plot").evaluate("el => el._fullData.map(t => t.name)")
    assert "class means" in right
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "latent.png"))
    # click one point: its image, label, prediction and distances appear (retry on another point if the
    # first click lands on a star or a legend entry instead of a sample)
    points = page.locator(f".st-key-latent_left {PLOT_POINTS}")
    for i in (5, 60, 120, 180, 240):
        box = points.nth(i).bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(300)  # plotly picks the hovered point, then the click selects it
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            page.wait_for_selector("text=predicts", timeout=8_000)
            break
        except playwright_api.TimeoutError:
            continue
    else:
        raise AssertionError("clicking points never showed the sample panel")
    wait_script_idle(page)
    assert_clean(page)
    assert page.locator("[data-testid='stImage']").count() >= 1


def test_attack_animation_plays(page, server):
    open_page(page, f"{server}/attack?n_samples=30&steps=20&eps=0.2&attack=pgd&samples=random")
    page.locator(".st-key-run_attack button").click()
    # the page shows a one-frame preview under the same key until the run is done: wait for the result
    page.wait_for_selector("text=Computed in", timeout=120_000)
    wait_script_idle(page)
    chart = page.locator(".st-key-attack_anim .js-plotly-plot")
    page.wait_for_function(
        "() => { const el = document.querySelector('.st-key-attack_anim .js-plotly-plot');"
        " return el && el._transitionData && el._transitionData._frames.length > 1; }", timeout=60_000)
    assert_clean(page)
    assert chart.evaluate("el => el._transitionData._frames.length") == 21
    idx = chart.evaluate("el => el._fullData.findIndex(t => t.name === 'moving 1')")
    x0 = chart.evaluate(f"el => Array.from(el._fullData[{idx}].x)")
    chart.locator("g.updatemenu-button").filter(has_text="Play").click()
    page.wait_for_timeout(3000)
    x1 = chart.evaluate(f"el => Array.from(el._fullData[{idx}].x)")
    assert len(x0) == len(x1) == 30 and x0 != x1, "Play did not move the points"
    page.screenshot(path=str(SHOTS / "attack.png"), full_page=True)
    assert not page.page_errors, page.page_errors


COUNT_PLOTS = """() => {
  window.__plots = {};
  const seen = new WeakSet();
  new MutationObserver(() => document.querySelectorAll('.st-key-attack_anim .js-plotly-plot, .st-key-step_bars '
                                                       + '.js-plotly-plot').forEach(el => {
    if (seen.has(el) || !el.on) return;
    seen.add(el);
    const key = el.closest('.st-key-attack_anim') ? 'attack_anim' : 'step_bars';
    const p = window.__plots[key] = window.__plots[key] || {afterplot: 0, replots: 0};
    el.on('plotly_afterplot', () => { p.afterplot++; });
    // a full redraw after the first one: Streamlit's second Plotly.react replotting instead of diffing
    el.on('plotly_beforeplot', () => { if (p.afterplot > 0) p.replots++; });
  })).observe(document.body, {subtree: true, childList: true});
}"""


def test_attack_animation_is_plotted_once(page, server):
    """Streamlit follows plotly's first draw with a Plotly.react on a copy of the figure; the animation (and the
    per-step bars under it) are built so that this second pass is a diff, not a second full draw (~0.2 s of a
    100-sample click; see figures.PageFigure)."""
    open_page(page, f"{server}/attack?n_samples=30&steps=10&eps=0.2&attack=pgd&samples=random")
    page.evaluate(COUNT_PLOTS)
    page.locator(".st-key-run_attack button").click()
    page.wait_for_selector("text=Computed in", timeout=120_000)
    wait_script_idle(page)
    page.wait_for_function("() => ['attack_anim', 'step_bars'].every(k => (window.__plots[k] || {}).afterplot >= 2)",
                           timeout=30_000)  # first draw and the react pass of each
    page.wait_for_timeout(1000)
    plots = page.evaluate("window.__plots")
    assert plots["attack_anim"]["replots"] == plots["step_bars"]["replots"] == 0, plots
    assert page.locator(".st-key-attack_anim .js-plotly-plot").evaluate("el => el._transitionData._frames.length") == 11
    assert_clean(page)


def test_latent_charts_are_plotted_once(page, server):
    """The two latent charts of the first page: no full redraw after their first draw (see figures.PageFigure)."""
    page.add_init_script("""document.addEventListener('DOMContentLoaded', () => {
      window.__plots = {};
      const seen = new WeakSet();
      new MutationObserver(() => document.querySelectorAll('.js-plotly-plot').forEach(el => {
        if (seen.has(el) || !el.on) return;
        seen.add(el);
        const key = el.closest('[class*=st-key-]').className.match(/st-key-[\\w-]+/)[0];
        const p = window.__plots[key] = window.__plots[key] || {afterplot: 0, replots: 0};
        el.on('plotly_afterplot', () => { p.afterplot++; });
        el.on('plotly_beforeplot', () => { if (p.afterplot > 0) p.replots++; });
      })).observe(document, {subtree: true, childList: true});
    })""")
    open_page(page, server)
    page.wait_for_selector(f".st-key-latent_right {PLOT_POINTS}", timeout=60_000)
    page.wait_for_function("() => ['st-key-latent_left', 'st-key-latent_right'].every(k => (window.__plots[k] || {})"
                           ".afterplot >= 2)", timeout=30_000)
    page.wait_for_timeout(1000)
    plots = page.evaluate("window.__plots")
    assert plots["st-key-latent_left"]["replots"] == plots["st-key-latent_right"]["replots"] == 0, plots
    # the export buttons under a half-width chart show their whole label (they were once cut to "D…")
    label = page.locator(".st-key-dl_latent_left_html button .stMarkdownEllipsis").first  # the label's box
    assert label.inner_text() == "Download HTML"
    assert label.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), "the button label is cut"


def test_attack_animation_downloads_as_offline_html_and_csv(page, server, tmp_path):
    """The "Download HTML" file is standalone: plotly inside, no network request when opened, the animation plays."""
    open_page(page, f"{server}/attack?n_samples=8&steps=5&eps=0.2&attack=pgd&samples=one%20class&sample_class=3"
                    "&method=decision&plane_y=3&plane_t=8")
    page.locator(".st-key-run_attack button").click()
    page.wait_for_selector("text=Computed in", timeout=120_000)
    wait_script_idle(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".st-key-attack_anim").screenshot(path=str(SHOTS / "decision-plane.png"))
    with page.expect_download(timeout=60_000) as info:
        page.locator(".st-key-dl_attack_html button").first.click()
    html = tmp_path / "attack.html"
    info.value.save_as(html)
    text = html.read_text()
    assert "Plotly" in text and "<script src=" not in text and len(text) > 1_000_000  # plotly.js embedded
    with page.expect_download(timeout=60_000) as info:
        page.locator(".st-key-dl_attack_csv button").first.click()
    csv_file = tmp_path / "attack.csv"
    info.value.save_as(csv_file)
    rows = csv_file.read_text().splitlines()
    assert rows[0] == "model,step,sample,label,pred,x,y,boundary_distance,perturbation"
    assert len(rows) == 1 + 2 * 6 * 8  # two models, clean + 5 steps, 8 samples
    with page.expect_download(timeout=60_000) as info:
        page.locator(".st-key-dl_adv_npz button").first.click()
    npz = tmp_path / "images.npz"
    info.value.save_as(npz)
    import numpy as np

    with np.load(npz, allow_pickle=False) as images:
        assert images["clean"].shape == (8, 8, 8, 1) and images["0_adversarial"].shape == (8, 8, 8, 1)
        assert 0 < float(np.abs(images["0_adversarial"] - images["clean"]).max()) <= 0.2 + 1e-3  # float16 frames
        assert set(images["label"].tolist()) == {3}
    with page.expect_download(timeout=60_000) as info:
        page.locator(".st-key-dl_adv_png button").first.click()
    png = tmp_path / "sample.png"
    info.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wait_script_idle(page)
    assert_clean(page)
    # open the file offline: every request other than the file itself is recorded and refused
    context = page.context.browser.new_context()
    requests: list[str] = []

    def refuse(route):  # type: ignore[no-untyped-def]
        requests.append(route.request.url)
        route.abort()

    context.route("http*://**/*", refuse)
    offline = context.new_page()
    offline.goto(html.as_uri())
    plot = offline.locator(".js-plotly-plot")
    plot.wait_for(timeout=30_000)
    assert plot.evaluate("el => el._transitionData._frames.length") == 6
    names = plot.evaluate("el => el._fullData.map(t => t.name)")
    assert {"moving 1", "moving 2", "boundary 1"} <= set(names)
    plot.locator("g.updatemenu-button").filter(has_text="Play").click()
    offline.wait_for_timeout(1500)
    assert not requests, requests
    context.close()


def test_train_a_tiny_model(page, server):
    open_page(page, f"{server}/train")
    epochs = page.locator(".st-key-tr_epochs input")
    epochs.fill("1")
    epochs.press("Tab")  # leave the field; Enter would submit the form itself on some Streamlit versions (1.59)
    page.locator(".st-key-train_start button").click()
    page.wait_for_selector(".st-key-train_anim .js-plotly-plot", timeout=180_000)
    wait_script_idle(page, 120_000)
    assert_clean(page)
    # wait for the elements rather than counting at one instant: a rerun may be redrawing the page
    page.get_by_text("Saved ").first.wait_for(timeout=30_000)
    page.locator(".st-key-train_use button").wait_for(timeout=30_000)
    assert_clean(page)


def test_every_other_page_opens_cleanly(page, server):
    for path, title in (("compare", "Compare"), ("learn", "Learn")):
        open_page(page, f"{server}/{path}")
        assert page.get_by_role("heading", name=title).count() >= 1


def test_bad_upload_shows_a_message(page, server):
    open_page(page, server)
    page.get_by_text("Upload a model").click()
    page.locator(".st-key-upload_file input[type='file']").set_input_files(
        files=[{"name": "broken.safetensors", "mimeType": "application/octet-stream", "buffer": b"definitely not a model"}])
    page.wait_for_selector("text=Could not use broken.safetensors", timeout=30_000)
    wait_script_idle(page)
    assert page.get_by_test_id("stException").count() == 0
    page.wait_for_selector(f".st-key-latent_left {PLOT_POINTS}", timeout=30_000)  # the app keeps working


@pytest.mark.parametrize("path", ["latent", "attack", "train", "compare", "draw", "learn", "lesson"])
def test_every_page_opens_by_its_direct_url(page, server, path):
    """A typed or bookmarked link to any page shows that page: no "Page not found" dialog, no error."""
    open_page(page, f"{server}/{path}?dataset=digits")
    page.wait_for_timeout(500)  # the dialog, when there is one, appears after the first run
    assert "not found" not in page.inner_text("body").lower()
    assert page.get_by_test_id("stDialog").count() == 0
    assert page.url.split("?")[0].rstrip("/").endswith(f"/{path}")
    titles = {"latent": "Latent space", "attack": "Attack", "train": "Train", "compare": "Compare", "draw": "Draw a digit",
              "learn": "Learn", "lesson": "Lesson"}
    assert page.locator("h1").first.inner_text().startswith(titles[path])
    if path == "latent":
        page.wait_for_selector(f".st-key-latent_left {PLOT_POINTS}", timeout=60_000)

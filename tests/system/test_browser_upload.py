"""A network of your own in a real browser (Debian's chromium via playwright, no browser download).

A torchvision ResNet-18 (1-channel stem) is trained briefly on digits by a plain PyTorch loop and its
state_dict written as safetensors; in the app the architecture is picked from the upload list, the latent
layer named, the weights file uploaded. The uploaded network then shows on the Latent space page (right
panel, with its class means) and on the Attack page, where an attack runs on it: no exception anywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from app_server import BROWSER_MARKS, wait_script_idle
from safetensors.torch import save_file

from gccs_core.data import load_dataset
from gccs_core.weights import build_arch

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = BROWSER_MARKS
ARCH = "torchvision:resnet18"
STEM = "resnet18_digits"
PLOT_POINTS = ".js-plotly-plot .scatterlayer .trace .point"


@pytest.fixture(scope="module")
def app_fast() -> str:
    return "1"  # this module's server skips the warm-up's extras


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """torchvision.models.resnet18 for 1x8x8 digits, one epoch of plain cross-entropy, as a safetensors state_dict."""
    train = load_dataset("digits", "train")
    torch.manual_seed(0)
    net = build_arch(ARCH, 10, (1, 8, 8))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    for i in range(0, len(train), 64):
        idx = perm[i : i + 64]
        opt.zero_grad()
        F.cross_entropy(net(train.x[idx]), train.y[idx]).backward()
        opt.step()
    path = tmp_path_factory.mktemp("own") / f"{STEM}.safetensors"
    save_file({k: v.contiguous() for k, v in net.eval().state_dict().items()}, str(path))
    return path


def assert_clean(page) -> None:
    assert page.get_by_test_id("stException").count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body and "Could not use" not in body and "could not run" not in body


def pick(page, key: str, option: str) -> None:
    """Choose ``option`` in the selectbox with widget key ``key``, the way a user does (open it, click the entry)."""
    for attempt in range(3):  # under load the first click can land while the sidebar is still being redrawn
        wait_script_idle(page)
        page.locator(f".st-key-{key} [role='combobox']").click()  # Streamlit's react-aria combobox
        try:
            page.wait_for_selector("[role='option']", timeout=20_000)
            break
        except playwright_api.TimeoutError:
            if attempt == 2:
                raise
    page.locator("[role='option']").filter(has_text=option).first.click()
    wait_script_idle(page)
    assert page.locator(f".st-key-{key} input").input_value() == option


def test_uploaded_resnet18_shows_on_the_latent_and_attack_pages(page, server, weights_file):
    page.goto(server)
    page.wait_for_selector(f".st-key-latent_right {PLOT_POINTS}", state="attached", timeout=120_000)
    wait_script_idle(page)
    page.get_by_text("Upload a model").click()
    wait_script_idle(page)
    page.get_by_text("Your own network (architecture + weights)").click()
    wait_script_idle(page)
    pick(page, "upload_arch", ARCH)
    layer = page.locator(".st-key-upload_layer input")
    layer.fill("avgpool")
    layer.press("Enter")
    wait_script_idle(page)
    page.locator(".st-key-upload_weights input[type='file']").set_input_files(str(weights_file))
    # registered, then the app reruns with the uploaded network in the right panel
    page.wait_for_function(f"() => (document.querySelector('.st-key-right input')?.value || '').includes('{STEM} [')",
                           timeout=120_000)
    wait_script_idle(page, 120_000)
    assert_clean(page)

    # Latent space page: the right panel is the uploaded network, drawn with its class means as prototypes
    page.wait_for_selector(f".st-key-latent_right {PLOT_POINTS}", state="attached", timeout=120_000)
    wait_script_idle(page, 120_000)
    right = page.locator(".st-key-latent_right .js-plotly-plot")
    names = right.evaluate("el => el._fullData.map(t => t.name)")
    assert "class means" in names, names
    assert page.locator(f".st-key-latent_right {PLOT_POINTS}").count() > 10
    assert_clean(page)

    # Attack page (navigation inside the session keeps the upload): the attack runs on the uploaded network
    page.get_by_role("link", name="Attack").click()
    page.locator(".st-key-run_attack button").wait_for(timeout=60_000)
    wait_script_idle(page, 120_000)
    page.locator(".st-key-run_attack button").click()
    page.wait_for_selector("text=Computed in", timeout=180_000)
    wait_script_idle(page, 120_000)
    page.wait_for_function(
        "() => { const el = document.querySelector('.st-key-attack_anim .js-plotly-plot');"
        " return el && el._transitionData && el._transitionData._frames.length > 1; }", timeout=60_000)
    assert_clean(page)
    body = page.inner_text("body")
    assert f"{STEM} [" in body and "· external" in body, body[:2000]
    titles = page.locator(".st-key-attack_anim .js-plotly-plot").evaluate(
        "el => (el.layout.annotations || []).map(a => a.text).join(' | ')")
    assert f"{STEM} [" in titles and "fooled" in titles, titles
    assert not page.page_errors, page.page_errors

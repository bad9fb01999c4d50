"""Look: the class palette stays distinct under simulated colour-vision deficiencies and readable on both
backgrounds; the dark theme switches the figures' own colours and the exported file's plotly template; the app
does not force a theme."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tomllib
from apptest import ROOT, errors, run_app, spec_by_trace, trace

from app import figures

# Machado, Oliveira and Fernandes (2009), severity 1.0, applied to linear RGB.
CVD = {
    "normal": np.eye(3),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
BACKGROUNDS = ("#FFFFFF", "#0E1117")  # Streamlit's light and dark backgrounds


def linear_rgb(hex_colour: str) -> np.ndarray:
    c = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def lab(rgb_linear: np.ndarray) -> np.ndarray:
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ np.clip(rgb_linear, 0, 1)
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def min_distance(palette, vision: str) -> float:
    """Smallest CIELAB distance (Delta E 1976) between two colours of ``palette`` as seen with ``vision``."""
    seen = [lab(CVD[vision] @ linear_rgb(c)) for c in palette]
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(seen, 2))


def contrast(a: str, b: str) -> float:
    la, lb = (float(np.array([0.2126, 0.7152, 0.0722]) @ linear_rgb(c)) for c in (a, b))
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


@pytest.mark.parametrize("vision", list(CVD))
def test_the_palette_stays_distinct_under_each_simulated_colour_vision(vision):
    assert len(set(figures.PALETTE)) == 10
    assert min_distance(figures.PALETTE, vision) >= 15.0
    # the measured figures are the documented ones
    documented = {"normal": 25.5, "deuteranopia": 18.3, "protanopia": 16.6, "tritanopia": 15.8}[vision]
    assert f"{vision} {documented}" in figures.PALETTE_NOTE
    assert round(min_distance(figures.PALETTE, vision), 1) == documented


def test_the_check_rejects_plotlys_default_palette():
    assert min_distance(TAB10, "deuteranopia") < 8 and min_distance(TAB10, "protanopia") < 5


def test_every_class_colour_stands_out_on_both_backgrounds():
    assert min(contrast(c, bg) for c in figures.PALETTE for bg in BACKGROUNDS) >= 1.6
    assert [figures.class_colour(k) for k in range(12)] == list(figures.PALETTE) + list(figures.PALETTE[:2])


def test_the_app_does_not_force_a_theme():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert "base" not in config.get("theme", {})


def test_dark_theme_switches_ink_and_export_template():
    view = {"coords/simplex": np.array([[0.0, 0.0], [1.0, 1.0]]), "y": np.array([0, 1]), "pred": np.array([0, 0]),
            "class_names": ["0", "1"], "dist": np.ones((2, 2)), "prototype_kind": "simplex vertices",
            "proto_coords/simplex": np.array([[0.0, 0.0], [1.0, 1.0]])}
    try:
        assert figures.use_theme("dark") == "dark"
        dark = figures.latent_figure(view, "simplex", "t")
        dark_html = figures.figure_html(dark, "t")
    finally:
        figures.use_theme("light")
    light = figures.latent_figure(view, "simplex", "t")
    star = lambda fig: next(d for d in fig.to_dict()["data"] if d["name"] == "simplex vertices")  # noqa: E731
    assert star(dark)["marker"]["line"]["color"] == figures.INKS["dark"].text != star(light)["marker"]["line"]["color"]
    assert figures.figure_theme(dark.to_dict()) == "dark" and figures.figure_theme(light.to_dict()) == "light"
    # the exported file carries plotly's dark template (its dark paper colour), the light one the white template
    import plotly.io as pio

    dark_paper = pio.templates["plotly_dark"].layout.paper_bgcolor
    assert dark_paper in dark_html and dark_paper not in figures.figure_html(light, "t")
    assert figures.use_theme(None) == "light" and figures.use_theme("sepia") == "light"


def test_pages_draw_with_the_theme_ink_and_caption_their_charts(pretrained):
    at = run_app()
    assert not at.exception and not errors(at), errors(at)
    fig = spec_by_trace(at, "simplex vertices")
    assert trace(fig, "simplex vertices")["marker"]["line"]["color"] == figures.INKS["light"].text
    assert figures.figure_theme(fig) == "light"  # AppTest has no browser theme: light
    assert at.caption  # the latent page says what its charts show


def test_line_colours_are_the_strongest_palette_colours():
    lines = [figures.series_colour(i) for i in range(len(figures.SERIES_ORDER))]
    assert len(set(lines)) == len(lines) and set(lines) <= set(figures.PALETTE)
    assert min(contrast(c, bg) for c in lines for bg in BACKGROUNDS) >= 2.2
    fig = figures.line_figure([1, 2], {"a": [0, 1], "b": [1, 0]}, "t", "x", "y")
    assert [d.line.color for d in fig.data] == lines[:2] and fig.data[0].line.dash != fig.data[1].line.dash

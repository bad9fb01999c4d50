"""The animations are drawn once in the browser: as ``st.plotly_chart`` serialises them they carry no plotly
template, a string ``meta``, plain (not base64) arrays in ``data`` and a ``datarevision`` that follows their content,
the conditions under which Streamlit's second ``Plotly.react`` is a diff rather than a full replot (the browser
test ``test_attack_animation_is_plotted_once`` checks the effect); and they style themselves for the theme."""

from __future__ import annotations

import json

import numpy as np
import plotly.io as pio
import plotly.tools
from apptest import run_app

from app import figures, lesson_figures
from gccs_core.views import Panel


def _panels(seed: int = 0, steps: int = 4, n: int = 6, k: int = 3) -> list[Panel]:
    rng = np.random.default_rng(seed)
    return [Panel(title=f"model {c}", frames=rng.normal(size=(steps, n, 2)).astype(np.float32),
                  pred=rng.integers(0, k, (steps, n)), y=rng.integers(0, k, n), protos=rng.normal(size=(k, 2)),
                  kind="simplex vertices", background=rng.normal(size=(20, 2)).astype(np.float32),
                  background_y=rng.integers(0, k, 20)) for c in range(2)]


def _sent(fig) -> dict:
    """The figure as ``st.plotly_chart`` sends it to the browser."""
    return json.loads(pio.to_json(plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True),
                                  validate=False))


def _animation(panels: list[Panel]):
    return figures.animation_figure(panels, ["a", "b", "c"], [f"step {t}" for t in range(panels[0].n_frames)])


def test_the_animation_is_sent_without_template_typed_data_or_object_meta():
    fig = _animation(_panels())
    assert isinstance(fig, figures.PageFigure)
    spec = _sent(fig)
    assert "template" not in spec["layout"]
    assert spec["layout"]["meta"] == "light" and isinstance(spec["layout"]["datarevision"], str)
    assert "bdata" not in json.dumps(spec["data"])
    moving = next(d for d in spec["data"] if d["name"] == "moving 1")
    assert np.allclose(moving["x"], _panels()[0].frames[0, :, 0], atol=1e-6)  # frame 0, as plain numbers
    paths = next(d for d in spec["data"] if d["name"] == "paths 1")
    assert None in paths["x"]  # the NaN gaps between paths become JSON nulls, not NaN
    assert len(spec["frames"]) == 4  # frames keep their compact arrays: they are never diffed


def test_datarevision_follows_the_content():
    a, b = _animation(_panels(0)), _animation(_panels(0))
    c = _animation(_panels(1))
    rev = lambda f: _sent(f)["layout"]["datarevision"]  # noqa: E731
    assert rev(a) == rev(b) != rev(c)
    assert rev(figures.animation_figure(_panels(0), ["a", "b", "c"], [f"step {t}" for t in range(4)], "label")) != rev(a)


def test_the_page_figure_styles_itself_for_the_theme_and_its_file_is_opaque():
    try:
        figures.use_theme("dark")
        dark = _animation(_panels())
    finally:
        figures.use_theme("light")
    light = _animation(_panels())
    d, lt = _sent(dark)["layout"], _sent(light)["layout"]
    assert d["font"]["color"] == figures.PAGE_TEXT["dark"] and lt["font"]["color"] == figures.PAGE_TEXT["light"]
    assert d["paper_bgcolor"] == d["plot_bgcolor"] == "rgba(0,0,0,0)"  # the page's own background shows through
    assert all(a["font"]["color"] == figures.PAGE_TEXT["dark"] for a in d["annotations"])  # the panel titles
    assert d["xaxis2"]["gridcolor"] != lt["xaxis2"]["gridcolor"]
    assert figures.figure_theme(_sent(dark)) == "dark"
    html = figures.figure_html(dark, "t")  # the saved file is a page of its own: the dark template's paper
    assert pio.templates["plotly_dark"].layout.paper_bgcolor in html
    assert '"paper_bgcolor":"rgba(0,0,0,0)"' not in html.replace(" ", "")


def test_an_animation_shown_at_its_last_frame_keeps_plain_data():
    fig = lesson_figures.at_last_frame(_animation(_panels()))
    spec = _sent(fig)
    assert "bdata" not in json.dumps(spec["data"]) and spec["layout"]["sliders"][0]["active"] == 3


def test_the_attack_page_draws_its_animation_without_streamlit_s_template(pretrained):
    at = run_app({"n_samples": "5", "steps": "2", "attack": "pgd", "samples": "random"}, page="attack")
    at.button(key="run_attack").click().run()
    assert not at.exception, at.exception
    chart = next(c for c in at.get("plotly_chart") if "attack_anim" in c.proto.id)
    assert chart.proto.theme == ""  # theme=None: the figure's own layout styles it
    assert "template" not in json.loads(chart.proto.spec)["layout"]


def _view(n: int = 30, k: int = 3, dims: int = 2) -> dict:
    rng = np.random.default_rng(0)
    return {"coords/simplex": rng.normal(size=(n, dims)), "y": np.arange(n) % k,
            "pred": (np.arange(n) + (np.arange(n) % 7 == 0)) % k, "dist": rng.random((n, k)),
            "class_names": [str(c) for c in range(k)], "prototype_kind": "simplex vertices",
            "proto_coords/simplex": rng.normal(size=(k, dims))}


def test_the_latent_figure_is_a_page_figure_in_2d_and_3d():
    for dims in (2, 3):
        fig = figures.latent_figure(_view(dims=dims), "simplex", "t")
        spec = _sent(fig)
        assert isinstance(fig, figures.PageFigure) and "template" not in spec["layout"]
        assert "bdata" not in json.dumps(spec["data"]) and spec["layout"]["font"]["color"] == figures.PAGE_TEXT["light"]
    three = _sent(figures.latent_figure(_view(dims=3), "simplex", "t"))["layout"]
    assert three["scene"]["xaxis"]["backgroundcolor"] == "rgba(0,0,0,0)"
    a = _sent(figures.latent_figure(_view(), "simplex", "t"))["layout"]["datarevision"]
    b = _sent(figures.latent_figure(_view(), "simplex", "t", selected=3))["layout"]["datarevision"]
    assert a != b == _sent(figures.latent_figure(_view(), "simplex", "t", selected=3))["layout"]["datarevision"]

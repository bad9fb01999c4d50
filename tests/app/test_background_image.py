"""The attack animation's clean points drawn as one image: each point lands at its data coordinate in its class
colour, the image spans the range it is given and a view's image is made once; the animation's subplot layout is
plotly's, built once per panel count."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from app import figures


def _pixels(image: dict) -> np.ndarray:
    data = base64.b64decode(image["source"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_points_land_at_their_coordinates_in_their_class_colour():
    pts = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, -1.5]])
    cls = np.array([0, 3, 8])
    image = figures.background_image(pts, cls, [-4.0, 4.0], [-2.0, 2.0], "x2", "y2", opacity=1.0)
    assert (image["xref"], image["yref"]) == ("x2", "y2")
    assert (image["x"], image["y"], image["sizex"], image["sizey"]) == (-4.0, 2.0, 8.0, 4.0)
    px = _pixels(image)
    h, w = px.shape[:2]
    assert (w, h) == figures.BACKGROUND_PX
    for (x, y), k in zip(pts, cls):
        col, row = int((x + 4) / 8 * w), int((2 - y) / 4 * h)
        want = [int(figures.PALETTE[k][i:i + 2], 16) for i in (1, 3, 5)]
        assert px[row, col, 3] == 255 and np.abs(px[row, col, :3].astype(int) - want).max() <= 2
    # nothing drawn away from the points
    assert px[5, 5, 3] == 0 and px[h // 2, 3 * w // 8, 3] == 0


def test_opacity_sets_alpha_and_points_outside_the_range_or_not_finite_are_skipped():
    pts = np.array([[0.0, 0.0], [50.0, 0.0], [np.nan, 1.0]])
    px = _pixels(figures.background_image(pts, np.array([1, 2, 3]), [-1.0, 1.0], [-1.0, 1.0], opacity=0.3))
    h, w = px.shape[:2]
    assert abs(int(px[h // 2, w // 2, 3]) - round(0.3 * 255)) <= 1
    assert (px[..., 3] > 0).sum() < 200  # one dot only


def test_the_same_view_gives_the_same_image_object_once():
    rng = np.random.default_rng(0)
    pts, cls = rng.standard_normal((360, 2)), rng.integers(0, 10, 360)
    a = figures.background_image(pts, cls, [-3.0, 3.0], [-3.0, 3.0])
    b = figures.background_image(pts.copy(), cls.copy(), [-3.0, 3.0], [-3.0, 3.0], "x2", "y2")
    assert a["source"] is b["source"] and b["xref"] == "x2"
    c = figures.background_image(pts + 0.5, cls, [-3.0, 3.0], [-3.0, 3.0])
    assert c["source"] != a["source"]


def test_the_cached_subplot_layout_is_plotlys_with_these_titles():
    import json

    from plotly.subplots import make_subplots

    for titles in (["one"], ["digits-gccs · gccs: 3/100 fooled", "digits-ce · ce (replayed from <b>x</b>)"]):
        want = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.06)
        got = figures._subplots_layout(len(titles), titles)
        assert json.dumps(got, sort_keys=True) == json.dumps(want.layout.to_plotly_json(), sort_keys=True)
    got["annotations"][0]["text"] = "changed"  # each call gets its own copy
    assert figures._subplots_layout(2, ["a", "b"])["annotations"][0]["text"] == "a"

"""Draw page (AppTest): an uploaded picture of a real test digit lands in both models' latent views with a
prediction; a file that is not an image, and an empty canvas, get a message and the page keeps working."""

from __future__ import annotations

import io

import numpy as np
from apptest import arr, errors, run_app, spec_by_trace, trace
from PIL import Image

from gccs_core import load_dataset


def digit_png(i: int, paper: bool = True) -> tuple[bytes, int]:
    """Test digit ``i`` of digits as a 128x128 PNG (dark ink on white paper by default) and its label."""
    test = load_dataset("digits", "test")
    u = (test.x[i, 0].numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(255 - u if paper else u).resize((128, 128), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue(), int(test.y[i])


def test_an_uploaded_digit_lands_in_both_latent_spaces(pretrained):
    at = run_app(page="draw")
    assert not at.exception and not errors(at), errors(at)
    assert any("Draw a digit" in i.value for i in at.info)  # the empty canvas: an invitation, not an error
    at.radio(key="draw_source").set_value("Upload").run()
    data, label = digit_png(0)
    at.file_uploader(key="draw_upload").set_value(("three.png", data, "image/png")).run()
    assert not at.exception and not errors(at), errors(at)
    fig = spec_by_trace(at, "your picture")
    point = trace(fig, "your picture")
    assert np.isfinite(point["x"][0]) and np.isfinite(point["y"][0])
    said = [m.value for m in at.markdown if "predicts" in m.value]
    assert len(said) == 2, said
    assert any(f"predicts **{label}**" in s for s in said), (label, said)  # the tiny GCCS model gets this one
    assert sum("the picture (the large cross)" in c.value for c in at.caption) == 2


def test_a_file_that_is_not_an_image_is_explained(pretrained):
    at = run_app(page="draw")
    at.radio(key="draw_source").set_value("Upload").run()
    at.file_uploader(key="draw_upload").set_value(("x.png", b"not an image at all", "image/png")).run()
    assert not at.exception
    assert any("Cannot use this picture" in e and "could not read the file as an image" in e for e in errors(at))
    blank = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 255, 255)).save(blank, "PNG")
    at.file_uploader(key="draw_upload").set_value(("blank.png", blank.getvalue(), "image/png")).run()
    assert any("blank" in e for e in errors(at))


def test_attack_the_uploaded_digit(pretrained):
    at = run_app(page="draw")
    at.radio(key="draw_source").set_value("Upload").run()
    data, label = digit_png(0)
    at.file_uploader(key="draw_upload").set_value(("d.png", data, "image/png")).run()
    at.toggle(key="draw_attack").set_value(True).run()
    at.selectbox(key="draw_label").set_value(label).run()
    at.slider(key="draw_eps").set_value(0.4).run()
    assert not at.exception and not errors(at), errors(at)
    path = trace(spec_by_trace(at, "attack path"), "attack path")
    assert len(arr(path["x"])) == 21  # the clean picture and 20 steps
    said = [m.value for m in at.markdown if m.value.startswith("Under attack")]
    assert len(said) == 2 and all("fooled" in s for s in said)
    assert any("predicts" in s and ", fooled." in s for s in said)  # eps 0.4 breaks at least one tiny model

"""gccs_core.images: real test digits rendered to image files come back as model inputs the pretrained
models classify as well as the originals; bad pictures get a clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gccs_core import load_dataset, load_model
from gccs_core.images import MAX_SIDE, attack_input, decode, image_input
from tests.apptest import ROOT


def rendered(a: np.ndarray, scale: int, paper: bool = False, fmt: str = "PNG") -> bytes:
    """A dataset image (H, W) in [0, 1] as an image file, upscaled; ``paper``: dark ink on white, in RGB."""
    u = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    im = Image.fromarray(255 - u if paper else u).resize((a.shape[1] * scale, a.shape[0] * scale),
                                                           Image.Resampling.NEAREST)
    if paper:
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@pytest.mark.parametrize(("dataset", "scale", "n", "max_drop"), [("digits", 8, 360, 0.07), ("mnist5k", 4, 200, 0.02)])
@pytest.mark.parametrize(("paper", "fmt"), [(False, "PNG"), (True, "JPEG")])
def test_rendered_test_digits_come_back_as_inputs_the_model_classifies(dataset, scale, n, max_drop, paper, fmt):
    model = load_model(ROOT / "pretrained" / f"{dataset}-gccs.safetensors")
    test = load_dataset(dataset, "test", limit=n)
    x, y = test.x.numpy(), test.y.numpy()
    inputs = [image_input(rendered(x[i, 0], scale, paper, fmt), dataset) for i in range(len(y))]
    assert all(a.shape == (1, *x.shape[1:]) and a.dtype == np.float32 for a in inputs)
    xs = np.concatenate(inputs)
    assert xs.min() >= 0.0 and xs.max() <= 1.0
    base, via = accuracy(model, x, y), accuracy(model, xs, y)
    assert via >= base - max_drop, (base, via)
    # one digit by itself: the model predicts its label
    first = int(np.flatnonzero(model(test.x[:20]).argmax(1).numpy() == y[:20])[0])
    assert int(model(torch.from_numpy(inputs[first])).argmax(1)) == y[first]


def test_a_drawing_on_a_clear_canvas_uses_its_opacity_as_ink():
    test = load_dataset("mnist5k", "test", limit=30)
    model = load_model(ROOT / "pretrained" / "mnist5k-gccs.safetensors")
    a = (test.x[7, 0].numpy() * 255).astype(np.uint8)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = a  # black strokes whose opacity is the digit, on a transparent background
    big = np.asarray(Image.fromarray(rgba, "RGBA").resize((280, 280), Image.Resampling.BILINEAR))
    x = image_input(big, "mnist5k")
    assert x.shape == (1, 1, 28, 28)
    assert int(model(torch.from_numpy(x)).argmax(1)) == int(test.y[7])


def png_of(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("data", "message"), [
    (b"this is not an image", "could not read the file as an image"),
    (b"", "empty"),
    (png_of(Image.new("L", (MAX_SIDE + 1, 4))), f"{MAX_SIDE + 1}x4 pixels; width and height must be 1..{MAX_SIDE}"),
    (png_of(Image.new("F", (16, 16)), "TIFF"), "image mode 'F' is not supported; allowed: 1, L"),
    (png_of(Image.new("L", (40, 40), 255)), "blank"),
    (png_of(Image.new("RGB", (40, 40), (10, 10, 10))), "blank"),
    (png_of(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)))[:2000],
     "damaged or truncated"),
])
def test_bad_pictures_get_a_clear_error(data, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        image_input(data, "mnist5k")


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((4, 4, 5), np.uint8), r"\(H, W\) or \(H, W, C\) with C in 1..4; got shape \(4, 4, 5\)"),
    (np.full((8, 8), 2.0), "float in \\[0, 1\\]"),
    (np.full((8, 8), np.nan), "without NaN"),
    ("a string", "bytes .* or a numpy array; got str"),
])
def test_bad_arrays_name_what_is_wrong(array, message):
    with pytest.raises(ValueError, match=message):
        decode(array)


def test_an_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="nope"):
        image_input(rendered(np.eye(8), 4), "nope")


def test_a_pictured_digit_can_be_attacked_and_its_path_is_recorded():
    model = load_model(ROOT / "pretrained" / "digits-ce.safetensors")
    test = load_dataset("digits", "test", limit=10)
    x = image_input(rendered(test.x[0, 0].numpy(), 8), "digits")
    label = int(test.y[0])
    weak = attack_input(model, x, label, eps=0.0, steps=5)
    assert weak.z.shape == (6, model.latent_dim) and not weak.fooled and (weak.pred == label).all()
    strong = attack_input(model, x, label, eps=0.3, steps=20)
    assert strong.fooled and strong.pred[0] == label and strong.pred[-1] != label
    assert np.abs(strong.x_adv - x).max() <= 0.3 + 1e-6
    with pytest.raises(ValueError, match="label=10 is invalid: it must be a class index 0..9"):
        attack_input(model, x, 10)


PEN = {  # digit -> polylines drawn with a pen on a 280x280 canvas, as on the Draw page
    "0": [(140, 40), (90, 70), (75, 140), (90, 210), (140, 240), (190, 210), (205, 140), (190, 70), (140, 40)],
    "1": [(140, 40), (140, 240)],
    "2": [(85, 80), (120, 45), (170, 45), (195, 85), (180, 130), (90, 235), (200, 235)],
    "3": [(90, 60), (140, 40), (185, 70), (175, 120), (135, 140), (180, 160), (190, 205), (140, 240), (85, 220)],
    "4": [(170, 240), (170, 40), (80, 170), (205, 170)],
    "7": [(80, 50), (200, 50), (125, 240)],
    "8": [(140, 140), (100, 110), (100, 65), (140, 40), (180, 65), (180, 110), (140, 140), (95, 175), (95, 215),
          (140, 240), (185, 215), (185, 175), (140, 140)],
}


def pen_drawing(digit: str, width: int) -> bytes:
    from PIL import ImageDraw

    im = Image.new("RGB", (280, 280))
    ImageDraw.Draw(im).line(PEN[digit], fill=(255, 255, 255), width=width, joint="curve")
    return png_of(im)


@pytest.mark.parametrize(("dataset", "loss", "at_least"), [("mnist5k", "gccs", 7), ("mnist5k", "ce", 7),
                                                           ("digits", "gccs", 6)])
@pytest.mark.parametrize("width", [10, 22])
def test_pen_drawn_digits_are_recognised(dataset, loss, at_least, width):
    model = load_model(ROOT / "pretrained" / f"{dataset}-{loss}.safetensors")
    right = [d for d in PEN if int(model(torch.from_numpy(image_input(pen_drawing(d, width), dataset))).argmax(1)) == int(d)]
    assert len(right) >= at_least, right


def test_a_thin_pen_is_thickened_to_the_datasets_stroke_width():
    from gccs_core.images import LAYOUTS, ink, place_digit, stroke_width

    thin = ink(decode(pen_drawing("7", 6)))
    layout = LAYOUTS["digits"]
    plain = place_digit(thin, (8, 8), layout.box, layout.centre)
    thick = place_digit(thin, (8, 8), layout.box, layout.centre, layout.stroke)
    assert thick.sum() > 1.5 * plain.sum()
    up = lambda a: np.kron(a, np.ones((8, 8)))  # noqa: E731 - measure at the rendering scale of the data test
    assert stroke_width(up(thick)) > stroke_width(up(plain))

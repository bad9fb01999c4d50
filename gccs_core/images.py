"""A drawn or uploaded picture -> a model input shaped and scaled like the dataset's images.

``image_input(image, dataset)`` reads PNG/JPG/... bytes (or an array), makes it grayscale (or RGB for a
colour dataset), turns dark-ink-on-light-paper into the datasets' light ink on black, crops the ink,
scales it into the dataset's digit box and centres it the way the dataset is centred (MNIST: centre of
mass at the image centre, digits: the ink's box centred), then returns a (1, C, H, W) float32 array in
[0, 1], the range of ``load_dataset``'s images (the model normalises by itself). numpy, scipy and Pillow
only: no torch, so the app can call it directly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .data import dataset_info

if TYPE_CHECKING:
    from .models import LatentClassifier

MAX_BYTES = 20 * 1024 * 1024
MAX_SIDE = 4096
"""Largest accepted width or height: bigger images are refused before their pixels are decoded."""
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "La", "CMYK", "YCbCr", "I;16", "I;16B", "I;16L")
"""Pillow image modes read here (8-bit and 16-bit grayscale, palette, RGB(A), CMYK)."""
INK_LEVEL = 0.05
"""Pixels above this fraction of the strongest ink count when cropping to the ink's box."""


@dataclass(frozen=True)
class Layout:
    """How a dataset places its digits: the ink's longer side in pixels and how it is centred."""

    box: float
    centre: str  # "mass" (centre of mass at the image centre, MNIST) | "box" (the ink's box centred)
    stroke: float = 0.0  # thinner strokes are thickened to this fraction of the ink's longer side (0: never)


LAYOUTS = {"digits": Layout(8.0, "box", 0.14)}
"""Per dataset; 28x28 grayscale datasets default to MNIST's 20-pixel box centred by mass. ``stroke``: the median
stroke width of the dataset's test digits (``stroke_width``): digits 0.14 of the longer side, MNIST 0.11."""


def _layout(dataset: str, size: int) -> Layout:
    return LAYOUTS.get(dataset, Layout(size * 20.0 / 28.0, "mass", 0.11))


def stroke_width(ink_img: np.ndarray) -> float:
    """Mean stroke width in pixels, ``2 * area / boundary`` of the ink above half its peak (exact for a long strip)."""
    from scipy import ndimage

    mask = ink_img > 0.5 * float(ink_img.max())
    boundary = int((mask & ~ndimage.binary_erosion(mask)).sum())
    return 2.0 * float(mask.sum()) / max(1, boundary)


def decode(image: bytes | np.ndarray) -> np.ndarray:
    """Image bytes or an array -> float32 (H, W, C) in [0, 1] with C = 1 (gray), 2 (gray+alpha), 3 or 4 (RGBA).

    Raises ``ValueError`` naming the problem: not an image, too large, an unsupported mode or shape.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(image))
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise ValueError(f"image must be image file bytes (PNG, JPG, ...) or a numpy array; got {type(image).__name__}.")


def _decode_bytes(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("the image is empty (0 bytes).")
    if len(data) > MAX_BYTES:
        raise ValueError(f"the image is {len(data) / 2**20:.1f} MB; at most {MAX_BYTES // 2**20} MB is accepted.")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"could not read the file as an image (PNG, JPG, GIF, BMP, WebP): {err}") from None
    w, h = img.size
    if w > MAX_SIDE or h > MAX_SIDE or w < 1 or h < 1:
        raise ValueError(f"the image is {w}x{h} pixels; width and height must be 1..{MAX_SIDE}.")
    if img.mode not in MODES:
        raise ValueError(f"image mode {img.mode!r} is not supported; allowed: {', '.join(MODES)}.")
    try:
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"the image file is damaged or truncated: {err}") from None
    if img.mode.startswith("I;16"):
        return (np.asarray(img, dtype=np.float32) / 65535.0)[..., None]
    target = {"1": "L", "L": "L", "P": "RGBA", "PA": "RGBA", "LA": "LA", "La": "LA"}.get(img.mode, "RGB")
    if img.mode in ("RGBA", "RGBa"):
        target = "RGBA"
    a = np.asarray(img.convert(target), dtype=np.float32) / 255.0
    return a[..., None] if a.ndim == 2 else a


def _from_array(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or min(a.shape[:2]) < 1:
        raise ValueError(f"an image array must be (H, W) or (H, W, C) with C in 1..4; got shape {a.shape}.")
    if max(a.shape[:2]) > MAX_SIDE:
        raise ValueError(f"the image is {a.shape[1]}x{a.shape[0]} pixels; width and height must be 1..{MAX_SIDE}.")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.number) else np.zeros(1)
        span = f"[{finite.min():.3g}, {finite.max():.3g}]" if finite.size else "NaN/inf only"
        raise ValueError(f"an image array must be uint8, or float in [0, 1] without NaN; got {a.dtype} "
                         f"with values {span}.")
    return a.astype(np.float32)


def ink(rgba: np.ndarray, invert: bool | None = None) -> np.ndarray:
    """(H, W, C) in [0, 1] -> (H, W) ink in [0, 1] on a 0 background.

    A picture with transparency (a drawing on a clear canvas) uses its opacity as the ink. Otherwise the
    luminance; ``invert=None`` inverts when the border is lighter than the middle (dark ink on paper).
    """
    c = rgba.shape[2]
    colour, alpha = (rgba[..., : c - 1], rgba[..., c - 1]) if c in (2, 4) else (rgba, None)
    if alpha is not None and alpha.min() < 0.99:
        return alpha.astype(np.float32)
    gray = colour @ np.array([0.299, 0.587, 0.114], np.float32) if colour.shape[2] == 3 else colour[..., 0]
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if invert is None:
        invert = background > 0.5
    if invert:
        gray, background = 1.0 - gray, 1.0 - background
    return np.clip((gray - background) / max(1e-6, 1.0 - background), 0.0, 1.0).astype(np.float32)


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BOX
                                                                             if a.shape[1] >= width else
                                                                             Image.Resampling.BILINEAR), np.float32)


def place_digit(ink_img: np.ndarray, size: tuple[int, int], box: float, centre: str = "mass",
                stroke: float = 0.0) -> np.ndarray:
    """Crop the ink to its box, thicken strokes thinner than ``stroke`` (a fraction of the longer side), scale the
    longer side to ``box`` pixels and centre it in ``size`` (H, W)."""
    from scipy import ndimage

    peak = float(ink_img.max())
    if peak < 0.05:
        raise ValueError("the image is blank: no stroke stands out from the background; draw or upload a digit.")
    rows, cols = np.nonzero(ink_img > INK_LEVEL * peak)
    crop = ink_img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] / peak
    grow = int(round(stroke * max(crop.shape) - stroke_width(crop)))
    if grow >= 2:  # a thin pen: widen the strokes by ``grow`` pixels (the crop grows by the same margin)
        crop = ndimage.grey_dilation(np.pad(crop, grow), size=(grow + 1, grow + 1))
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.clip(_resize(crop, nw, nh), 0.0, 1.0)
    H, W = size
    out = np.zeros((H, W), np.float32)
    top, left = (H - nh) // 2, (W - nw) // 2
    out[top : top + nh, left : left + nw] = small[: H - top, : W - left]
    if centre == "mass":
        cy, cx = ndimage.center_of_mass(out)
        out = ndimage.shift(out, ((H - 1) / 2 - cy, (W - 1) / 2 - cx), order=1, mode="constant", cval=0.0)
    elif centre != "box":
        raise ValueError(f"centre={centre!r} is unknown; allowed: mass, box.")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def image_input(image: bytes | np.ndarray, dataset: str, invert: bool | None = None) -> np.ndarray:
    """A picture as one input of ``dataset``'s models: float32 (1, C, H, W) in [0, 1].

    Grayscale datasets get the ink cropped, scaled and centred like their digits (see the module
    docstring); colour datasets get the picture resized to their shape. ``invert``: None guesses
    the polarity from the border, True/False force it.
    """
    c, h, w = dataset_info(dataset).in_shape
    pixels = decode(image)
    if c == 1:
        layout = _layout(dataset, min(h, w))
        out = place_digit(ink(pixels, invert), (h, w), layout.box, layout.centre, layout.stroke)
        return out[None, None]
    rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    out = np.stack([_resize(rgb[..., k], w, h) for k in range(3)])
    return np.clip(out, 0.0, 1.0)[None].astype(np.float32)


@dataclass(frozen=True)
class Placement:
    """Where one input lands for one model: its latent, class scores, prediction and prototype distances."""

    z: np.ndarray  # (d,)
    scores: np.ndarray  # (K,)
    pred: int
    distances: np.ndarray  # (K,) to the given prototypes


def place_input(model: LatentClassifier, x: np.ndarray, prototypes: np.ndarray) -> Placement:
    """Embed one input ``x`` (1, C, H, W) with ``model`` (eval mode) and measure it against ``prototypes`` (K, d)."""
    import torch

    from .models import embed_batched
    from .views import distances

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one input of shape (1, C, H, W); got {x.shape}.")
    with torch.no_grad():
        z, scores = embed_batched(model, torch.from_numpy(x))
    z0, s0 = z[0].numpy().astype(np.float64), scores[0].numpy().astype(np.float64)
    return Placement(z0, s0, int(s0.argmax()), distances(z0[None], prototypes)[0])


@dataclass(frozen=True)
class AttackedInput:
    """One input under attack: latents ``z`` (T+1, d) and predictions ``pred`` (T+1,) per frame (0 = clean),
    the final adversarial input ``x_adv`` (1, C, H, W) and whether the attack changed the prediction."""

    z: np.ndarray
    pred: np.ndarray
    x_adv: np.ndarray
    fooled: bool


def attack_input(model: LatentClassifier, x: np.ndarray, label: int, eps: float = 0.15, steps: int = 20,
                 objective: str = "margin", attack: str = "pgd", seed: int = 0) -> AttackedInput:
    """Attack one input ``x`` (1, C, H, W) of true class ``label`` (untargeted, L-inf) and record its path."""
    import torch

    from .attacks import run_attack

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one input of shape (1, C, H, W); got {x.shape}.")
    k = int(model.num_classes)
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) < k:
        raise ValueError(f"label={label!r} is invalid: it must be a class index 0..{k - 1}.")
    res = run_attack(model, torch.from_numpy(x), torch.tensor([int(label)]), attack=attack, eps=eps, steps=steps,
                     objective=objective, record=True, seed=seed)
    traj = res.trajectory
    return AttackedInput(traj.z[:, 0].numpy().astype(np.float64), traj.pred[:, 0].numpy().astype(np.int64),
                         res.x_adv.numpy().astype(np.float32), bool(res.success[0]))

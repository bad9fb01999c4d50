"""Pure plotting: plotly figures from arrays the library computed. No model, no torch, no maths beyond drawing.

Trace names are stable (tests look for them): ``"<class> "`` points per class, ``"Gaussian <class>"``
ellipses (1 and 2 sigma in one trace), the prototype trace named after its kind
(``simplex vertices`` / ``class means`` / ``learned centres``), ``simplex edges``; in animations
``trails <panel>`` and ``moving <panel>`` are the traces the frames update; there the ellipses are layout
shapes named ``Gaussian <class>``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas  # noqa: F401 - import it whole before any figure: see below
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gccs_core.views import Panel

# plotly reads sys.modules["pandas"] directly while building every trace. Without the import above, a session on
# the Compare page importing pandas made concurrent sessions' figures fail with "partially initialized module
# 'pandas' has no attribute 'Series'" (found by tests/test_many_users.py). Importing it here, under the import
# lock, means every thread that draws sees pandas complete.

PALETTE = ("#88CCEE", "#009988", "#DDCC77", "#EE3377", "#FFAABB", "#E69F00", "#882255", "#117733", "#D55E00", "#AA4499")
"""The one class palette: ten colours of the Okabe-Ito and Paul Tol (muted, vibrant, light) palettes, picked by a
max-min search so that every pair stays apart for normal vision and under simulated deuteranopia, protanopia and
tritanopia, and every colour stands out from both the light and the dark background (PALETTE_NOTE)."""
PALETTE_NOTE = ("smallest pairwise CIELAB distance (Delta E 1976) over the 45 pairs: normal 25.5, deuteranopia 18.3, "
                "protanopia 16.6, tritanopia 15.8 (Machado et al. 2009 simulation, severity 1); luminance contrast "
                "at least 1.6:1 against white and against Streamlit's dark background #0E1117. The previous plotly "
                "palette: deuteranopia 7.2, protanopia 4.6. Checked by tests/app/test_theme.py.")


@dataclass(frozen=True)
class Ink:
    """The non-class colours of a figure for one app theme: outlines, rings, boundary, trails, edges."""

    kind: str
    text: str  # star outlines, the misclassified ring, the decision boundary, the selection ring
    halo: str  # thin outline around points, the background's colour
    trail: str
    path: str
    edge: str
    muted: str  # bars that are not highlighted
    template: str  # plotly template of a figure shown outside the app (the HTML export)


INKS = {
    "light": Ink("light", "#000000", "#ffffff", "rgba(40,40,40,0.55)", "rgba(60,60,60,0.15)", "rgba(80,80,80,0.18)",
                 "rgba(120,120,120,0.5)", "plotly_white"),
    "dark": Ink("dark", "#f5f5f5", "#0e1117", "rgba(230,230,230,0.6)", "rgba(215,215,215,0.18)",
                "rgba(210,210,210,0.25)", "rgba(165,165,165,0.55)", "plotly_dark"),
}
_THEME: ContextVar[str] = ContextVar("gccs_figure_theme", default="light")

PAGE_TEXT = {"light": "#31333F", "dark": "#FAFAFA"}
"""Streamlit's body text colour in each theme: the text of figures that style themselves (see PageFigure)."""


def use_theme(kind: str | None) -> str:
    """Draw the figures of this thread (one Streamlit script run) for the ``light`` or ``dark`` theme.

    ``kind`` is ``st.context.theme.type``; None (not known yet) or anything else means light.
    Inside the app, Streamlit's own plotly template follows the theme for the small charts (backgrounds,
    fonts, grid); the latent charts and animations (``PageFigure``) set those from this theme themselves,
    and every figure's own colours (outlines, rings, trails) follow it.
    """
    kind = kind if kind in INKS else "light"
    _THEME.set(kind)
    return kind


def ink() -> Ink:
    return INKS[_THEME.get()]


def summary_lines(what: str, values: Mapping[str, Any]) -> str:
    """One-line text summary of a chart for its caption (what a screen reader or a printout gets)."""
    return f"{what}: " + "; ".join(f"{k} {v}" for k, v in values.items()) + "."


SINGULAR = {"simplex vertices": "simplex vertex", "class means": "class mean", "learned centres": "learned centre"}


def singular(kind: str) -> str:
    return SINGULAR.get(kind, kind)


def class_colour(k: int) -> str:
    return PALETTE[int(k) % len(PALETTE)]


def discrete_colourscale(num_classes: int) -> list[list[float | str]]:
    """Colour scale on [0, K-1] that gives integer value k exactly ``class_colour(k)``."""
    if num_classes < 2:
        return [[0.0, class_colour(0)], [1.0, class_colour(0)]]
    return [[k / (num_classes - 1), class_colour(k)] for k in range(num_classes)]


def _gapped(segments: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) float32 arrays of several polylines, NaN between them (plotly breaks a line at NaN)."""
    gap = np.full((1, 2), np.nan, dtype=np.float32)
    pts = np.concatenate([part for seg in segments for part in (np.asarray(seg, dtype=np.float32), gap)])
    return pts[:, 0], pts[:, 1]


def ellipse_traces(contours: np.ndarray, class_names: Sequence[str], xaxis: str = "x", yaxis: str = "y") -> list[dict]:
    """One line trace per class holding its contours (K, n_levels, P, 2), e.g. 1-sigma and 2-sigma; NaN classes skipped.

    Traces are plain dicts with float32 arrays: plotly sends those as compact binary, and skipping the
    per-trace validation of ``go.Scatter`` keeps animations with many traces fast to build.
    """
    traces = []
    for k, name in enumerate(class_names):
        if k >= len(contours) or not np.isfinite(contours[k]).all():
            continue
        xs, ys = _gapped(list(contours[k]))
        traces.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines", "name": f"Gaussian {name}",
                       "legendgroup": f"c{k}", "showlegend": False, "line": {"color": class_colour(k), "width": 1},
                       "opacity": 0.55, "hoverinfo": "skip", "xaxis": xaxis, "yaxis": yaxis})
    return traces


def ellipse_shapes(contours: np.ndarray, class_names: Sequence[str], xref: str = "x", yref: str = "y") -> list[dict]:
    """The class contours (K, n_levels, P, 2) as layout shapes (one SVG path per class), named ``Gaussian <class>``.

    Used in animations: the browser draws 20 shapes much faster than 20 extra traces, and the frames
    never touch them.
    """
    shapes = []
    for k, name in enumerate(class_names):
        if k >= len(contours) or not np.isfinite(contours[k]).all():
            continue
        path = " ".join("M" + " L".join(f"{px:.5g},{py:.5g}" for px, py in level) + " Z" for level in contours[k])
        shapes.append({"type": "path", "path": path, "xref": xref, "yref": yref, "name": f"Gaussian {name}",
                       "line": {"color": class_colour(k), "width": 1}, "opacity": 0.55, "layer": "below"})
    return shapes


def prototype_traces(coords: np.ndarray, kind: str, class_names: Sequence[str], xaxis: str = "x", yaxis: str = "y",
                     edges: bool = True) -> list[dict]:
    """Stars at the prototypes, labelled with the class names; for simplex vertices also the (projected) edges."""
    ok = np.isfinite(coords).all(1)
    idx = np.flatnonzero(ok)
    traces = []
    if edges and kind == "simplex vertices" and len(idx) > 1:
        ex, ey = _gapped([coords[[a, b]] for a in idx for b in idx if a < b])
        traces.append({"type": "scatter", "x": ex, "y": ey, "mode": "lines", "name": "simplex edges",
                       "line": {"color": ink().edge, "width": 1}, "hoverinfo": "skip", "showlegend": False,
                       "xaxis": xaxis, "yaxis": yaxis})
    traces.append({
        "type": "scatter", "x": coords[idx, 0], "y": coords[idx, 1], "mode": "markers+text", "name": kind,
        "text": [str(class_names[k]) for k in idx], "textposition": "top center", "textfont": {"size": 14},
        "marker": {"symbol": "star", "size": 18, "color": [class_colour(k) for k in idx],
                   "line": {"color": ink().text, "width": 1.5}},
        "hovertemplate": "%{text}: " + singular(kind) + "<extra></extra>", "xaxis": xaxis, "yaxis": yaxis})
    return traces


def latent_figure(view: Mapping[str, Any], method: str, title: str, height: int = 520,
                  selected: int | None = None, approximate: bool = False) -> go.Figure:
    """Latent space of one model in one projection: points per class, Gaussians, prototypes, selection."""
    coords = np.asarray(view[f"coords/{method}"])
    y, pred = np.asarray(view["y"]), np.asarray(view["pred"])
    names = [str(c) for c in view["class_names"]]
    dist = np.asarray(view["dist"])
    kind = str(view["prototype_kind"])
    three_d = coords.shape[1] == 3
    data: list[dict[str, Any]] = []
    # plain lists (not a typed array) so that a selection event returns them as lists
    custom = np.stack([np.arange(len(y)), y, pred, dist.min(1).round(3)], 1).astype(object)
    for k, name in enumerate(names):
        m = y == k
        if not m.any():
            continue
        symbols = np.where(pred[m] == y[m], "circle", "x")
        hover = ("sample %{customdata[0]}<br>label " + name + ", predicted %{customdata[2]}"
                 "<br>nearest " + singular(kind) + " at %{customdata[3]:.2f}<extra></extra>")
        if three_d:
            data.append({"type": "scatter3d", "x": coords[m, 0], "y": coords[m, 1], "z": coords[m, 2], "mode": "markers",
                         "name": name, "legendgroup": f"c{k}", "marker": {"size": 3, "color": class_colour(k)},
                         "customdata": custom[m].tolist(), "hovertemplate": hover})
        else:
            data.append({"type": "scatter", "x": coords[m, 0], "y": coords[m, 1], "mode": "markers", "name": name,
                         "legendgroup": f"c{k}",
                         "marker": {"size": 7, "color": class_colour(k), "symbol": symbols.tolist(), "opacity": 0.8,
                                    "line": {"width": 0.5, "color": ink().halo}},
                         "customdata": custom[m].tolist(), "hovertemplate": hover})
    protos = np.asarray(view[f"proto_coords/{method}"])
    if three_d:
        ok = np.isfinite(protos).all(1)
        data.append({"type": "scatter3d", "x": protos[ok, 0], "y": protos[ok, 1], "z": protos[ok, 2],
                     "mode": "markers+text", "name": kind, "text": [names[k] for k in np.flatnonzero(ok)],
                     "marker": {"symbol": "diamond", "size": 8, "color": [class_colour(k) for k in np.flatnonzero(ok)],
                                "line": {"color": ink().text, "width": 1}}})
    else:
        if f"ellipse/{method}" in view:
            data += ellipse_traces(np.asarray(view[f"ellipse/{method}"]), names)
        data += prototype_traces(protos, kind, names)
        if selected is not None and 0 <= selected < len(y):
            data.append({"type": "scatter", "x": [coords[selected, 0]], "y": [coords[selected, 1]], "mode": "markers",
                         "name": "selected", "hoverinfo": "skip", "showlegend": False,
                         "marker": {"size": 22, "color": "rgba(0,0,0,0)", "line": {"color": ink().text, "width": 3}}})
    boundary = view.get(f"boundary/{method}")
    if boundary is not None and not three_d:
        data.append(boundary_trace(np.asarray(boundary)))
    note = " — approximate (UMAP)" if approximate else ""
    layout: dict[str, Any] = {
        "title": {"text": title + note}, "height": height,
        "margin": {"l": 10, "r": 10, "t": 50, "b": 10} if three_d else {"l": 45, "r": 10, "t": 50, "b": 30},
        "legend": {"itemsizing": "constant", "title": {"text": "true class"}}, "clickmode": "event+select",
        "dragmode": "pan" if not three_d else "orbit", "uirevision": title}
    if not three_d and not approximate:
        layout["yaxis"] = {"scaleanchor": "x", "scaleratio": 1}
    if boundary is not None:
        layout["xaxis"] = {"title": {"text": "signed latent distance to the boundary"}}
        layout["yaxis"] = {**layout.get("yaxis", {}), "title": {"text": "largest remaining spread"}}
        layout["margin"]["b"] = 55  # room for the axis title (no automargin, see page_style)
    layout["datarevision"] = _token(coords, y, pred, title + note, selected, method)
    if three_d:
        page_style(layout, ())
        grid = _grid()
        layout["scene"] = {ax: {"gridcolor": grid, "zerolinecolor": grid, "color": PAGE_TEXT[_THEME.get()],
                                "backgroundcolor": "rgba(0,0,0,0)"} for ax in ("xaxis", "yaxis", "zaxis")}
    else:
        page_style(layout)
    return _unvalidated_figure({"data": data, "layout": layout}, page=True)


def with_new_point(fig: go.Figure, xy: np.ndarray, label: str) -> go.Figure:
    """Add one new input's position (a large cross in the ink colour, named ``your picture``) to a 2-D latent figure."""
    fig.add_trace(go.Scatter(x=[float(xy[0])], y=[float(xy[1])], mode="markers+text", name="your picture",
                             text=[label], textposition="bottom center", hovertemplate=label + "<extra></extra>",
                             marker={"symbol": "x-thin-open", "size": 26, "color": ink().text,
                                     "line": {"width": 4, "color": ink().text}}))
    return fig


def with_path(fig: go.Figure, path: np.ndarray, label: str) -> go.Figure:
    """Add an attack's path (T, 2) from the new input to its end (a line with an arrow-head marker, ``attack path``)."""
    fig.add_trace(go.Scatter(x=path[:, 0].tolist(), y=path[:, 1].tolist(), mode="lines+markers", name="attack path",
                             hovertemplate=label + "<extra></extra>",
                             line={"color": ink().text, "width": 2, "dash": "dot"},
                             marker={"size": [4] * (len(path) - 1) + [14], "color": ink().text,
                                     "symbol": ["circle"] * (len(path) - 1) + ["triangle-up"]}))
    return fig


def boundary_trace(segment: np.ndarray, xaxis: str = "x", yaxis: str = "y") -> dict[str, Any]:
    """The decision boundary of a decision plane: the exact line it is there (dashed)."""
    return {"type": "scatter", "x": segment[:, 0], "y": segment[:, 1], "mode": "lines", "name": "decision boundary",
            "line": {"color": ink().text, "width": 2, "dash": "dash"}, "hoverinfo": "skip", "xaxis": xaxis, "yaxis": yaxis}


def selected_position(point: dict[str, Any]) -> int | None:
    """Sample position (index into the view) of one point of a selection event; None for non-sample traces."""
    data = point.get("customdata")
    if isinstance(data, dict):  # some plotly builds return {"0": v0, "1": v1, ...}
        data = [data[k] for k in sorted(data, key=lambda k: int(k))] if all(str(k).isdigit() for k in data) else None
    if not isinstance(data, (list, tuple)) or not data:
        return None
    try:
        return int(data[0])
    except (TypeError, ValueError):
        return None


def _range(*arrays: np.ndarray, pad: float = 0.08) -> tuple[list[float], list[float]]:
    pts = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1, 2) for a in arrays])
    pts = pts[np.isfinite(pts).all(1)]
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad * span, hi + pad * span
    return [float(lo[0]), float(hi[0])], [float(lo[1]), float(hi[1])]


BACKGROUND_PX = (720, 576)
"""Pixel size of an animation's background image: a little above a panel's size on a wide page, dots stay round."""
BACKGROUND_DOT = 5.0
"""Diameter of a background point on screen (pixels of a panel about 540 px wide), a little above the former marker size 4."""


def png_bytes(image: np.ndarray) -> bytes:
    """An (H, W) or (H, W, C) image, uint8 or float in [0, 1], as PNG bytes."""
    import io

    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _dot(diameter: float) -> np.ndarray:
    """Coverage in [0, 1] of an anti-aliased disc of ``diameter`` pixels, on its own small square grid."""
    n = int(np.ceil(diameter)) + 2
    c = (n - 1) / 2
    yy, xx = np.mgrid[0:n, 0:n]
    return np.clip(diameter / 2 + 0.5 - np.hypot(xx - c, yy - c), 0.0, 1.0)


_BACKGROUNDS: dict[bytes, dict[str, Any]] = {}
_BACKGROUNDS_MAX = 32


def background_image(points: np.ndarray, classes: np.ndarray, xr: Sequence[float], yr: Sequence[float],
                     xref: str = "x", yref: str = "y", opacity: float = 0.3) -> dict[str, Any]:
    """The clean points as one layout image (a PNG data URI) spanning ``xr`` x ``yr`` in data coordinates.

    The browser then draws one ``<image>`` instead of one SVG path per point: in a 100-sample, two-model attack
    animation the 720 background markers were the largest part of plotly's drawing time. The points never move
    and are never hovered, so nothing is lost. Dots are composited ("over") in numpy, later points on top.
    Images are kept (up to 32) by their inputs: a view's background is drawn once, not on every click.
    """
    import hashlib

    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 2)
    cls = np.ascontiguousarray(classes, dtype=np.int64)
    key = hashlib.blake2b(pts.tobytes() + cls.tobytes() + np.array([*xr, *yr, opacity, *BACKGROUND_PX,
                          BACKGROUND_DOT]).tobytes() + "".join(PALETTE).encode(), digest_size=16).digest()
    if key not in _BACKGROUNDS:
        if len(_BACKGROUNDS) >= _BACKGROUNDS_MAX:
            _BACKGROUNDS.pop(next(iter(_BACKGROUNDS)))
        _BACKGROUNDS[key] = {"source": _points_png(pts, cls, xr, yr, opacity), "x": xr[0], "y": yr[1],
                             "sizex": xr[1] - xr[0], "sizey": yr[1] - yr[0], "sizing": "stretch", "layer": "below",
                             "xanchor": "left", "yanchor": "top", "name": "clean points"}
    return {**_BACKGROUNDS[key], "xref": xref, "yref": yref}


def _points_png(pts: np.ndarray, classes: np.ndarray, xr: Sequence[float], yr: Sequence[float],
                opacity: float) -> str:
    import base64

    w, h = BACKGROUND_PX
    dot = _dot(BACKGROUND_DOT * w / 540) * opacity
    n = dot.shape[0]
    rgba = np.zeros((h + 2 * n, w + 2 * n, 4), dtype=np.float32)  # premultiplied colour, alpha; n px margin
    ok = np.isfinite(pts).all(1)
    cols = np.array([[int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)] for c in PALETTE], dtype=np.float32)
    px = ((pts[ok, 0] - xr[0]) / (xr[1] - xr[0]) * w + n / 2).astype(int)
    py = ((yr[1] - pts[ok, 1]) / (yr[1] - yr[0]) * h + n / 2).astype(int)
    for x, y, k in zip(px, py, np.asarray(classes)[ok]):
        if not (0 <= x < w + n and 0 <= y < h + n):
            continue
        tile = rgba[y:y + n, x:x + n]
        keep = (1.0 - dot)[..., None]
        tile[..., :3] = tile[..., :3] * keep + dot[..., None] * cols[int(k) % len(PALETTE)]
        tile[..., 3] = tile[..., 3] * keep[..., 0] + dot
    rgba = rgba[n:n + h, n:n + w]
    alpha = rgba[..., 3:4]
    colour = np.divide(rgba[..., :3], alpha, out=np.zeros_like(rgba[..., :3]), where=alpha > 0)
    out = (np.concatenate([colour, alpha], axis=2) * 255 + 0.5).astype(np.uint8)
    return "data:image/png;base64," + base64.b64encode(png_bytes(out)).decode("ascii")


TRAIL_STEPS = 4
"""Frames of recent path drawn behind each moving point; the whole path is drawn once, faintly."""


def _paths(frames: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Paths of every sample from frame ``start`` to ``stop`` (inclusive), one line trace with NaN gaps (float32)."""
    seg = frames[start : stop + 1]  # (L, N, 2)
    gap = np.full((1, seg.shape[1], 2), np.nan, dtype=np.float32)
    path = np.concatenate([seg.astype(np.float32), gap]).transpose(1, 0, 2).reshape(-1, 2)
    return path[:, 0], path[:, 1]


def animation_figure(panels: Sequence[Panel], class_names: Sequence[str], frame_labels: Sequence[str],
                     colour_by: str = "pred", height: int = 520, trails: bool = True, duration_ms: int = 350) -> go.Figure:
    """Side-by-side animation of samples moving in latent space (attack steps or training epochs).

    Each ``gccs_core.views.Panel``: ``title``, ``frames`` (T, N, 2), ``pred`` (T, N), ``y`` (N,), ``protos`` (K, 2),
    ``kind``, optional ``background`` (M, 2) + ``background_y`` (M,) and ``ellipses`` (K, L, P, 2).
    Points are coloured by the current prediction (``colour_by="pred"``) or true label (``"label"``);
    a point that is currently misclassified gets a thick black outline. One Play button drives all panels.

    Traces are plain dicts of float32/int arrays assembled into the figure without plotly's per-trace
    validation (the figure is fixed by this code, not by user input): with ~30 static traces and 2 x 21
    animated ones, validating them took longer than the two attacks behind a 100-sample animation.
    """
    names = [str(c) for c in class_names]
    layout = _subplots_layout(len(panels), [p.title for p in panels])
    data: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    moving_idx: list[int] = []
    scale = discrete_colourscale(len(names))
    n_frames = len(frame_labels)

    def moving_data(p: dict[str, Any], t: int, col: int, xa: str, ya: str) -> list[dict[str, Any]]:
        frames, pred, y = p.frames, p.pred, p.y
        colour_cls = pred[t] if colour_by == "pred" else y
        out = []
        if trails:  # the last TRAIL_STEPS steps: frames stay small (O(T N), not O(T^2 N))
            xs, ys = _paths(frames, max(0, t - TRAIL_STEPS), t)
            out.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines", "name": f"trails {col}",
                        "line": {"color": ink().trail, "width": 1.5}, "hoverinfo": "skip",
                        "showlegend": False, "xaxis": xa, "yaxis": ya})
        # Numeric colours (class index on a discrete colour scale) and outline widths: numpy arrays are serialised
        # as compact binary, far smaller and faster than per-point strings or symbols, which matters with many frames.
        out.append({
            "type": "scatter", "x": frames[t, :, 0].astype(np.float32), "y": frames[t, :, 1].astype(np.float32),
            "mode": "markers", "name": f"moving {col}", "showlegend": False, "xaxis": xa, "yaxis": ya,
            "marker": {"size": 10, "color": np.asarray(colour_cls, dtype=np.float32), "colorscale": scale, "cmin": 0,
                       "cmax": max(1, len(names) - 1),
                       "line": {"color": ink().text, "width": np.where(pred[t] == y, 0.8, 3.0).astype(np.float32)}},
            **_moving_hover(p, t)})
        return out

    axes = []
    for col, p in enumerate(panels, start=1):
        xa, ya = ("x", "y") if col == 1 else (f"x{col}", f"y{col}")
        axes.append((xa, ya))
        xr, yr = _range(p.frames, p.protos, *([p.background] if p.background is not None else []))
        if p.background is not None:
            # the image spans the clean points' own range (not the axes', which follow the moving points), so the
            # same view gives the same image on every click and the cache below serves it
            bg = np.asarray(p.background)
            images.append({**background_image(bg, np.asarray(p.background_y), *_range(bg)), "xref": xa, "yref": ya})
        if p.ellipses is not None:
            shapes += ellipse_shapes(p.ellipses, names, xa, ya)
        data += prototype_traces(p.protos, p.kind, names, xa, ya)
        if p.boundary is not None:
            data.append({**boundary_trace(np.asarray(p.boundary), xa, ya), "name": f"boundary {col}", "showlegend": False})
        if trails and p.n_frames > 1:
            px, py = _paths(p.frames, 0, p.n_frames - 1)
            data.append({"type": "scatter", "x": px, "y": py, "mode": "lines", "name": f"paths {col}",
                         "line": {"color": ink().path, "width": 0.8}, "hoverinfo": "skip",
                         "showlegend": False, "xaxis": xa, "yaxis": ya})
        start = len(data)
        data += moving_data(p, 0, col, xa, ya)
        moving_idx += list(range(start, len(data)))
        layout[f"xaxis{'' if col == 1 else col}"].update(range=xr, autorange=False)
        layout[f"yaxis{'' if col == 1 else col}"].update(range=yr, autorange=False)

    frames = []
    for t in range(n_frames):
        fdata: list[dict[str, Any]] = []
        for col, p in enumerate(panels, start=1):
            fdata += moving_data(p, t, col, *axes[col - 1])
        frames.append({"name": str(t), "data": fdata, "traces": moving_idx})
    play = {"frame": {"duration": duration_ms, "redraw": False}, "transition": {"duration": int(duration_ms * 0.6)},
            "fromcurrent": True, "mode": "immediate"}
    still = {"frame": {"duration": 0, "redraw": False}, "mode": "immediate", "transition": {"duration": 0}}
    layout.update(
        height=height, margin={"l": 45, "r": 10, "t": 60, "b": 10}, uirevision="animation", shapes=shapes, images=images,
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0.0, "y": -0.04, "xanchor": "left", "yanchor": "top",
                      "showactive": False, "pad": {"r": 10, "t": 10},
                      "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, play]},
                                  {"label": "❚❚ Pause", "method": "animate", "args": [[None], still]}]}],
        sliders=[{"active": 0, "x": 0.22, "len": 0.78, "y": -0.02, "yanchor": "top", "pad": {"t": 10},
                  "currentvalue": {"prefix": ""},
                  "steps": [{"label": lab, "method": "animate", "args": [[str(t)], still]}
                            for t, lab in enumerate(frame_labels)]}])
    layout["datarevision"] = _token(frame_labels, colour_by, trails,
                                    *(a for p in panels for a in (p.title, p.frames, p.pred, p.y, p.protos)))
    page_style(layout)
    layout["sliders"][0]["font"] = layout["updatemenus"][0]["font"] = {"color": PAGE_TEXT[_THEME.get()]}
    return _unvalidated_figure({"data": data, "layout": layout, "frames": frames}, page=True)


@functools.lru_cache(maxsize=8)
def _subplots_base(cols: int) -> str:
    """``make_subplots``' layout for ``cols`` panels in a row, as JSON (built and validated once per count)."""
    base = make_subplots(rows=1, cols=cols, subplot_titles=[f"\x00{c}" for c in range(cols)], horizontal_spacing=0.06)
    return json.dumps(base.layout.to_plotly_json())


def _subplots_layout(cols: int, titles: Sequence[str]) -> dict[str, Any]:
    """A fresh copy of the ``cols``-panel layout with these subplot titles (plotly builds it in ~25 ms each time)."""
    layout = json.loads(_subplots_base(cols))
    for note in layout.get("annotations", []):
        if str(note.get("text", "")).startswith("\x00"):
            note["text"] = titles[int(note["text"][1:])]
    return layout


def _moving_hover(p: Panel, t: int) -> dict[str, Any]:
    """Hover of the moving points at frame ``t``: label and prediction, and in a decision plane the point's
    latent distance to the boundary and its input perturbation norm at that step."""
    if p.distance is None or p.perturbation is None:
        return {"customdata": np.stack([p.y, p.pred[t]], 1).astype(np.int32),
                "hovertemplate": "label %{customdata[0]} → predicted %{customdata[1]}<extra></extra>"}
    custom = np.stack([p.y, p.pred[t], p.distance[t], p.perturbation[t]], 1).astype(np.float32)
    return {"customdata": custom,
            "hovertemplate": "label %{customdata[0]} → predicted %{customdata[1]}<br>latent distance to the boundary "
                             "%{customdata[2]:.2f}<br>input perturbation %{customdata[3]:.3f}<extra></extra>"}


def _token(*parts: Any) -> str:
    """A short hash of a figure's content (arrays by their bytes, anything else by its repr), for
    ``layout.datarevision``: ``Plotly.react`` then treats same-token arrays as unchanged (see PageFigure)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return digest.hexdigest()


class PageFigure(go.Figure):
    """A figure styled by its own layout for the app's theme, with no plotly template: draw it with ``theme=None``.

    Streamlit draws a chart twice: ``Plotly.newPlot``, then ``Plotly.react`` with a JSON copy of the figure.
    plotly.js compares the template (and an object ``meta``) by identity, so a templated copy replots everything
    (~0.2 s for the attack animation); so do typed (base64) arrays in ``data``, and plain arrays of a new identity
    unless ``layout.datarevision`` is unchanged. Without those, the second pass is a diff (~0.03 s).
    ``to_dict`` (what ``st.plotly_chart`` serialises) leaves plotly's default template out.
    """

    def to_dict(self) -> dict[str, Any]:
        spec = super().to_dict()
        spec["layout"].pop("template", None)
        return spec


def as_page_figure(fig: go.Figure) -> PageFigure:
    """A validated figure with plain-list data (no numpy arrays in it) as a ``PageFigure``: drawn once, see there."""
    spec = fig.to_dict()
    layout = spec["layout"]
    layout["datarevision"] = _token(json.dumps(spec["data"], default=str))
    page_style(layout)
    return _unvalidated_figure({"data": spec["data"], "layout": layout}, page=True)


def _grid() -> str:
    """Grid and zero lines of a PageFigure in the current theme: faint, as Streamlit's template draws them."""
    return "rgba(49,51,63,0.12)" if _THEME.get() == "light" else "rgba(250,250,250,0.14)"


def page_style(layout: dict[str, Any], axes: Sequence[str] | None = None) -> dict[str, Any]:
    """``layout`` with the colours Streamlit's template would give it in the current theme (transparent backgrounds,
    the page's text colour and font, faint grid lines), set explicitly for a ``PageFigure``. ``axes``: the 2-D
    axes to style, by default ``xaxis``, ``yaxis`` and every other ``xaxis*``/``yaxis*`` the layout has."""
    text, grid = PAGE_TEXT[_THEME.get()], _grid()
    if axes is None:
        axes = sorted({"xaxis", "yaxis", *(k for k in layout if k.startswith(("xaxis", "yaxis")))})
    font = {"family": '"Source Sans Pro", "Source Sans 3", sans-serif', "color": text, "size": 12}
    layout.update(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)", font=font,
                  hoverlabel={"bgcolor": ink().halo, "font": {"color": text}},
                  modebar={"bgcolor": "rgba(0,0,0,0)", "color": ink().muted, "activecolor": text})
    for name in axes:  # no automargin: it redraws the whole figure once more; the caller leaves room for ticks
        layout[name] = {"gridcolor": grid, "zerolinecolor": grid, "linecolor": grid, **layout.get(name, {})}
    for note in layout.get("annotations", []):
        note.setdefault("font", {}).setdefault("color", text)
    return layout


def plain_arrays(obj: Any) -> Any:
    """``obj`` with numpy arrays as lists (NaN as None): what a ``PageFigure`` holds in ``data`` (see there)."""
    if isinstance(obj, np.ndarray):
        return [None if v != v else v for v in obj.tolist()] if obj.dtype.kind == "f" else obj.tolist()
    if isinstance(obj, dict):
        return {k: plain_arrays(v) for k, v in obj.items()}
    return obj


def _unvalidated_figure(spec: dict[str, Any], page: bool = False) -> go.Figure:
    """``go.Figure`` from a dict this module built, without plotly's per-property validation (~30x faster).

    plotly has a (private) ``_validate`` switch for data and layout but none for frames, so the frames
    are attached directly; a plotly without these internals gets the validated (slower) figure. ``page``: a
    ``PageFigure`` (the caller styled the layout and set its datarevision) with plain-list data.
    """
    spec["layout"]["meta"] = _THEME.get()  # the theme its colours were chosen for (figure_html); a string, see PageFigure
    cls = PageFigure if page else go.Figure
    if page:
        spec["data"] = [plain_arrays(d) for d in spec["data"]]
    try:
        fig = cls({"data": spec["data"], "layout": spec["layout"]}, _validate=False)
        if spec.get("frames"):
            fig._frame_objs = tuple(go.Frame(f, _validate=False) for f in spec["frames"])
        return fig
    except (TypeError, AttributeError, ValueError):
        return cls(spec)


SERIES_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
"""Line styles of the series of a line chart: a cue besides colour."""
SERIES_ORDER = (1, 3, 8, 9, 7, 5)
"""Palette entries for lines, most contrasting first (at least 2.2:1 on both the light and the dark background)."""


def series_colour(i: int) -> str:
    """Colour of the ``i``-th line of a chart (lines are thin: the palette's strongest colours)."""
    return PALETTE[SERIES_ORDER[i % len(SERIES_ORDER)]]


def line_figure(x: Sequence[float], series: dict[str, Sequence[float]], title: str, xlabel: str, ylabel: str,
                height: int = 300, y_range: list[float] | None = None) -> go.Figure:
    """Small line chart, one line per named series (palette colour and a dash style each)."""
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(x), y=list(values), mode="lines+markers", name=name,
                                 line={"color": series_colour(i),
                                       "dash": SERIES_DASHES[i % len(SERIES_DASHES)]}))
    fig.update_layout(title={"text": title}, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis_title=xlabel, yaxis_title=ylabel)
    if y_range is not None:
        fig.update_yaxes(range=y_range)
    return fig


def overlay_figures(runs: Mapping[str, Sequence[Mapping[str, float]]], height: int = 340) -> tuple[go.Figure, go.Figure]:
    """Test accuracy and training loss per epoch of several runs (label -> history records), one line per run."""
    figs = []
    for key, title, ylabel, log in (("test_accuracy", "test accuracy per epoch", "test accuracy", False),
                                    ("train_loss", "training loss per epoch", "training loss (log)", True)):
        fig = go.Figure()
        for i, (label, history) in enumerate(runs.items()):
            rows = [h for h in history if key in h]
            fig.add_trace(go.Scatter(x=[h["epoch"] for h in rows], y=[h[key] for h in rows], mode="lines+markers",
                                     name=label, line={"color": series_colour(i),
                                                       "dash": SERIES_DASHES[i % len(SERIES_DASHES)]}))
        fig.update_layout(title={"text": title}, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                          xaxis_title="epoch", yaxis_title=ylabel, legend={"orientation": "h", "y": -0.25})
        if log:
            fig.update_yaxes(type="log")
        figs.append(fig)
    return figs[0], figs[1]


def distance_bars(dist: np.ndarray, class_names: Sequence[str], kind: str, predicted: int, height: int = 220) -> go.Figure:
    """Distance from one sample to every prototype; the predicted class highlighted."""
    names = [str(c) for c in class_names]
    colours = [class_colour(k) if k == predicted else ink().muted for k in range(len(names))]
    fig = go.Figure(go.Bar(x=names, y=np.asarray(dist, dtype=float), marker={"color": colours}, name="distance"))
    fig.update_layout(title={"text": f"distance to each {singular(kind)}"}, height=height,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def upscale(img: np.ndarray, size: int = 112) -> np.ndarray:
    """(H, W, C) image in [0, 1] or uint8 -> uint8 (size, size[, 3]) with nearest-neighbour upscaling (crisp pixels)."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
    factor = max(1, size // a.shape[0])
    a = np.repeat(np.repeat(a, factor, 0), factor, 1)
    return a[..., 0] if a.shape[-1] == 1 else a


def perturbation_image(delta: np.ndarray, eps: float, size: int = 112) -> np.ndarray:
    """Perturbation shown amplified: 0.5 + delta / (2 eps), so the whole eps-ball spans black to white."""
    scale = max(float(eps), 1e-8)
    return upscale(np.clip(0.5 + np.asarray(delta) / (2.0 * scale), 0.0, 1.0), size)


def figure_theme(spec: Mapping[str, Any]) -> str:
    """The app theme a figure's colours were chosen for (``light`` unless it says ``dark``)."""
    meta = spec.get("layout", {}).get("meta")
    return meta if meta in INKS else "light"


def figure_html(fig: go.Figure, title: str) -> str:
    """A figure (animation included) as one self-contained HTML page: plotly.js embedded, works offline."""
    import plotly.io as pio

    spec = fig.to_dict()  # the page's figure keeps Streamlit's theme-following template; the file gets plotly's own
    theme = figure_theme(spec)
    spec["layout"]["template"] = pio.templates[INKS[theme].template].to_plotly_json()
    for name in ("paper_bgcolor", "plot_bgcolor"):  # a PageFigure's see-through backgrounds: the file gets the template's
        if spec["layout"].get(name) == "rgba(0,0,0,0)":
            del spec["layout"][name]
    return pio.to_html(spec, validate=False, include_plotlyjs=True, include_mathjax=False, full_html=True,
                       auto_play=False, config={"displaylogo": False}, default_width="100%",
                       div_id="gccs-figure").replace(
        "<head>", f"<head><meta charset='utf-8'><title>{title}</title>", 1)

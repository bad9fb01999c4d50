"""Figures of the Lesson page that the other pages do not need: the score-gap histogram and the weak-vs-strong chart.

Pure plotting from numbers ``gccs_core.lesson`` computed. Trace names are stable (tests look for them):
``"zero CE gradient"`` / ``"non-zero CE gradient"``, and per source ``"weak: <label>"`` / ``"strong: <label>"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app import figures

WEAK_COLOUR, STRONG_COLOUR = "#56b4e9", "#d55e00"  # Okabe-Ito: colour-vision-safe, visible on light and dark
ZERO_COLOUR, NONZERO_COLOUR = "#e69f00", "#999999"
FONT = 18


def gap_figure(gap: np.ndarray, zero: np.ndarray, threshold: float, height: int = 420) -> go.Figure:
    """Histogram of the clean score gap ``s_y - max_{k != y} s_k``, split by whether the CE gradient is exactly zero,
    with the float32 underflow gap marked."""
    gap = np.asarray(gap, dtype=float)
    zero = np.asarray(zero, dtype=bool)
    top = float(max(np.nanmax(gap) if len(gap) else threshold, threshold) * 1.05)
    bins = {"start": 0.0, "end": top, "size": max(top / 30.0, 1.0)}
    fig = go.Figure()
    for mask, name, colour in ((~zero, "non-zero CE gradient", NONZERO_COLOUR), (zero, "zero CE gradient", ZERO_COLOUR)):
        fig.add_trace(go.Histogram(x=gap[mask], name=name, xbins=bins, marker_color=colour))
    fig.add_vline(x=threshold, line_dash="dash", line_color="#888888",
                  annotation_text=f"float32 underflow: gap {threshold:.1f}", annotation_position="top left",
                  annotation_font_size=FONT - 2)
    fig.update_layout(barmode="stack", height=height, font={"size": FONT}, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      title={"text": f"clean score gap of the samples: {int(zero.sum())} of {len(zero)} have an exactly "
                                     "zero CE gradient"},
                      xaxis_title="score gap s_y − max other s_k", yaxis_title="samples",
                      legend={"orientation": "h", "y": 1.0, "x": 0.0, "yanchor": "bottom"})
    return fig


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def protocol_figure(readings: Sequence[dict[str, Any]], height: int = 460) -> go.Figure:
    """Weak vs strong robust accuracy per eps, one panel per source, the gap labelled over each pair of bars.

    ``readings``: ``ProtocolReading.to_dict()`` rows; a missing figure (None) draws no bar and is labelled "–".
    """
    if not readings:
        raise ValueError("no weak/strong readings to draw.")
    fig = make_subplots(rows=1, cols=len(readings), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[r["label"] for r in readings])
    for col, r in enumerate(readings, start=1):
        labels = [f"eps {e:g}" for e in r["eps"]]
        for kind, colour in (("weak", WEAK_COLOUR), ("strong", STRONG_COLOUR)):
            vals = [None if v is None else 100 * v for v in r[kind]]
            fig.add_trace(go.Bar(x=labels, y=vals, name=f"{kind}: {r['label']}", marker_color=colour,
                                 legendgroup=kind, showlegend=False, text=[_pct(v) for v in r[kind]],
                                 textposition="outside", textfont={"size": FONT - 4},
                                 hovertemplate=f"{kind}: {r[kind + '_means']}<br>%{{x}}: %{{y:.1f}}%<extra></extra>"),
                          row=1, col=col)
        for lab, w, s, g in zip(labels, r["weak"], r["strong"], r["gap"]):
            text = "gap –" if g is None else f"gap {100 * g:+.0f} pts"
            top = max(v for v in (w, s, 0.0) if v is not None)
            fig.add_annotation(x=lab, y=100 * top + 12, text=f"<b>{text}</b>", showarrow=False, font={"size": FONT - 2},
                               xref=f"x{'' if col == 1 else col}", yref=f"y{'' if col == 1 else col}")
    for kind, colour, means in (("weak", WEAK_COLOUR, "a CE-only evaluation"), ("strong", STRONG_COLOUR,
                                                                                   "margin / DLR / worst case")):
        fig.add_trace(go.Bar(x=[None], y=[None], name=f"{kind} protocol ({means})", marker_color=colour,
                             legendgroup=kind, showlegend=True))
    fig.update_yaxes(range=[0, 118], title_text="robust accuracy (%)", row=1, col=1)
    fig.update_layout(barmode="group", height=height, font={"size": FONT}, margin={"l": 10, "r": 10, "t": 60, "b": 10},
                      legend={"orientation": "h", "y": -0.12, "x": 0.0}, bargap=0.25)
    fig.update_annotations(font_size=FONT - 2)
    return fig


def at_last_frame(fig: go.Figure) -> go.Figure:
    """An animation shown at its last frame (slider included): a still screen then tells the end of the story."""
    if not fig.frames:
        return fig
    last = fig.frames[-1].to_plotly_json()  # numpy arrays; the figure's data gets them as lists (see PageFigure)
    for i, trace in zip(last["traces"], last["data"]):
        fig.data[i].update(figures.plain_arrays({k: v for k, v in trace.items() if k != "type"}))
    if fig.layout.sliders:
        fig.layout.sliders[0].active = len(fig.frames) - 1
    return fig

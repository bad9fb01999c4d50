"""Small plotly charts of the Attack and Compare pages, drawn from numbers the library computed.

``step_bars_figure``: one sample at one attack step, per model, as bars (distance to each vertex, or class
scores; ``gccs_core.transfer.step_bars``). ``interval_figure``: readings with their confidence intervals as
error bars (``gccs_core.study_table.readings_table``). Trace names are stable for the tests: ``distance`` /
``score`` bars, one ``<arm>`` trace per configuration. ``robust_curve_figure``: robust accuracy against eps,
the run's own eps marked by a vertical line (a layout shape, not a trace).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures import as_page_figure, class_colour, ink, line_figure

MUTED = "rgba(120,120,120,0.45)"
BAR_TITLES = {"distance": "distance to each vertex (nearest wins)", "score": "class scores (highest wins)"}


def step_bars_figure(bars: Sequence[Mapping[str, Any]], class_names: Sequence[str], true_class: int,
                     step: int, height: int = 240) -> go.Figure:
    """One subplot per model: the sample's bars at ``step``; the winning class in its colour, the true class outlined."""
    names = [str(c) for c in class_names]
    titles = [f"{b['label']}{'' if b['how'] == 'white-box' else ' (' + b['how'] + ')'}: {BAR_TITLES[b['kind']]}"
              for b in bars]
    fig = make_subplots(rows=1, cols=max(1, len(bars)), subplot_titles=titles, horizontal_spacing=0.08)
    for col, b in enumerate(bars, start=1):
        winner = int(b["winner"])
        colours = [class_colour(k) if k == winner else MUTED for k in range(len(names))]
        widths = [3 if k == int(true_class) else 0 for k in range(len(names))]
        fig.add_trace(go.Bar(x=names, y=[float(v) for v in b["values"]], name=b["kind"], showlegend=False,
                             marker={"color": colours, "line": {"width": widths, "color": ink().text}},
                             hovertemplate="class %{x}: %{y:.3g}<extra></extra>"), row=1, col=col)
    fig.update_layout(height=height, margin={"l": 45, "r": 10, "t": 50, "b": 30}, bargap=0.25,
                      title={"text": f"step {step}: what each model sees (outlined: true class {names[int(true_class)]})",
                             "font": {"size": 13}})
    fig.update_annotations(font_size=11)
    return as_page_figure(fig)  # drawn after every attack click: once, not twice (theme=None on the page)


def interval_figure(rows: Sequence[Mapping[str, Any]], title: str, height: int = 420) -> go.Figure:
    """Robust accuracy against eps, one line per configuration, with asymmetric error bars ``low``..``high``."""
    fig = go.Figure()
    arms: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        arms.setdefault(str(r["arm"]), []).append(r)
    for arm, pts in arms.items():
        pts = sorted(pts, key=lambda r: r["eps"])
        seeds = sorted({s for r in pts for s in r["seeds"]})
        fig.add_trace(go.Scatter(
            x=[r["eps"] for r in pts], y=[r["robust"] for r in pts], mode="lines+markers", name=arm,
            error_y={"type": "data", "symmetric": False, "array": [r["high"] - r["robust"] for r in pts],
                     "arrayminus": [r["robust"] - r["low"] for r in pts], "thickness": 1.2, "width": 4},
            customdata=[[r["low"], r["high"], r["interval"], r["n"]] for r in pts],
            hovertemplate=(f"{arm} (seeds {', '.join(map(str, seeds))})<br>eps %{{x}}: %{{y:.3f}}"
                           "<br>%{customdata[2]} interval %{customdata[0]:.3f}–%{customdata[1]:.3f}, n=%{customdata[3]}"
                           "<extra></extra>")))
    fig.update_layout(title={"text": title}, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis_title="eps", yaxis_title="robust accuracy")
    fig.update_yaxes(range=[0, 1.02])
    return fig


def robust_curve_figure(eps: Sequence[float], series: dict[str, Sequence[float]], title: str, run_eps: float,
                        height: int = 300) -> go.Figure:
    """Robust accuracy against eps, one line per model, with a dotted line at the eps of the run above it."""
    fig = line_figure(eps, series, title, "eps", "robust accuracy", height=height, y_range=[0, 1.02])
    fig.add_vline(x=float(run_eps), line={"dash": "dot", "width": 1, "color": ink().text}, name="this run's eps",
                  annotation_text=f"this run: {run_eps:g}", annotation_position="top right",
                  annotation_font_size=11)
    return fig

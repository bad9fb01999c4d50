"""What makes the attack animation slow in the browser: variants of its figure timed in headless chromium (by hand).

    NUMBA_CACHE_DIR=.numba_cache python bench/bench_anim_parts.py [--repeats 9] [--json bench/results/anim_parts.json]

The figure of ``app.figures.animation_figure`` for 100 samples on two models (21 frames, 360 background points
and 10 classes' 1/2-sigma ellipses per panel, as the Attack page builds it) is serialised as Streamlit does
(``plotly.io.to_json(fig, validate=False)``) and drawn in a blank page with the plotly.js the plotly package ships:
``JSON.parse`` + ``Plotly.react(div, figure)`` (what react-plotly does, frames included) until two animation
frames later (painted). Variants leave one part out, so each part's cost is the difference; the variants are
alternated round-robin and medians reported, since the machine is shared. Also the JSON size of each variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import plotly
import plotly.io as pio
from app_server import launch_browser  # bench/app_server.py (the script's own folder is on sys.path)

from app import figures  # the installed app package: this benchmark measures its figure
from gccs_core.views import Panel, class_ellipses

ROOT = Path(__file__).resolve().parents[1]

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
DRAW = """async (spec) => {
  const t0 = performance.now();
  const fig = JSON.parse(spec);
  const div = document.createElement('div');
  div.style.width = '1400px';
  document.body.appendChild(div);
  await Plotly.react(div, fig);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const ms = performance.now() - t0;
  Plotly.purge(div);
  div.remove();
  return ms;
}"""


def panels(seed: int = 0, n: int = 100, steps: int = 21, m: int = 360, k: int = 10) -> list[Panel]:
    rng = np.random.default_rng(seed)
    out = []
    for col in range(2):
        protos = rng.standard_normal((k, 2)) * 3
        covs = np.repeat(np.eye(2)[None] * 0.3, k, 0)
        y = rng.integers(0, k, n)
        start = protos[y] + rng.normal(0, 0.5, (n, 2))
        frames = start[None] + np.cumsum(rng.normal(0, 0.1, (steps, n, 2)), 0)
        bgy = rng.integers(0, k, m)
        out.append(Panel(title=f"model {col}", frames=frames.astype(np.float32), pred=rng.integers(0, k, (steps, n)),
                         y=y, protos=protos, kind="simplex vertices",
                         background=(protos[bgy] + rng.normal(0, 0.5, (m, 2))).astype(np.float32), background_y=bgy,
                         ellipses=class_ellipses(protos, covs).astype(np.float32)))
    return out


def variants(ps: list[Panel]) -> dict[str, dict[str, Any]]:
    """name -> figure dict (what Streamlit would send) for the full figure and each part left out."""
    names = [str(c) for c in range(10)]
    labels = [f"step {t}" for t in range(ps[0].n_frames)]

    def fig(p: list[Panel] = ps, **kw: Any) -> dict[str, Any]:
        return json.loads(pio.to_json(figures.animation_figure(p, names, labels, "pred", 520, **kw), validate=False))

    full = fig()
    out = {"full": full,
           "no background": fig([Panel(**{**p.__dict__, "background": None, "background_y": None}) for p in ps]),
           "no ellipses": fig([Panel(**{**p.__dict__, "ellipses": None}) for p in ps]),
           "no trails/paths": fig(trails=False)}
    no_frames = json.loads(json.dumps(full))
    no_frames.pop("frames")
    no_frames["layout"].pop("sliders")
    out["no frames"] = no_frames
    slim = json.loads(json.dumps(full))  # frames carrying only what changes
    keep = {"x", "y", "marker", "customdata"}
    for f in slim["frames"]:
        f["data"] = [{key: v for key, v in d.items() if key in keep} for d in f["data"]]
    out["frames: only changing keys"] = slim
    no_text = json.loads(json.dumps(full))
    for d in no_text["data"]:
        if d.get("mode") == "markers+text":
            d["mode"] = "markers"
    out["no star labels"] = no_text
    no_menus = json.loads(json.dumps(full))
    for key in ("sliders", "updatemenus"):
        no_menus["layout"].pop(key)
    out["no slider/buttons"] = no_menus
    thin = json.loads(json.dumps(full))  # one outline width for all moving points (the misclassified ring dropped)
    for d in [*thin["data"], *(d for f in thin["frames"] for d in f["data"])]:
        if str(d.get("name", "")).startswith("moving"):
            d["marker"]["line"]["width"] = 1
    out["no per-point outline width"] = thin
    flat = json.loads(json.dumps(full))  # background without per-trace opacity on a colour scale: rgba per point
    for d, p in zip([d for d in flat["data"] if str(d.get("name", "")).startswith("clean")], ps):
        d["marker"] = {"size": 4, "color": [figures.class_colour(k) for k in p.background_y], "opacity": 0.25}
    out["background: colour strings"] = flat
    plain = json.loads(json.dumps(full))  # background markers with no per-point style at all: one colour
    for d in plain["data"]:
        if str(d.get("name", "")).startswith("clean"):
            d["marker"] = {"size": 4, "color": "rgba(120,120,120,0.25)"}
    out["background: one colour"] = plain
    no_paths = json.loads(json.dumps(full))  # the faint whole paths left out, the moving trails kept
    no_paths["data"] = [d for d in no_paths["data"] if not str(d.get("name", "")).startswith("paths")]
    n_static = len(no_paths["data"])
    for f in no_paths["frames"]:
        f["traces"] = list(range(n_static - len(f["traces"]), n_static))
    out["no faint whole paths"] = no_paths
    return out


STREAMLIT_APP = '''
import streamlit as st
from bench_anim_parts import streamlit_figure

variant = st.query_params.get("variant", "full")
clicked = st.button("Run", key="run_attack")
st.plotly_chart(streamlit_figure(variant if clicked else "no frames"), key="attack_anim")
if clicked and st.query_params.get("burn"):  # 1 s of server CPU after the chart, as the robust-curve attacks do
    import time
    t_end = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        sum(i * i for i in range(10_000))
if clicked and st.query_params.get("page"):  # what the Attack page draws below the animation
    import numpy as np
    from app import figures
    for _ in range(2):
        cols = st.columns(3)
        for c in cols:
            c.image(figures.upscale(np.random.default_rng(0).random((8, 8, 1)), 112))
    st.plotly_chart(figures.line_figure(list(range(10)), {{"a": list(range(10))}}, "bars", "k", "v"), key="b1")
    c1, c2 = st.columns(2)
    c1.plotly_chart(figures.line_figure(list(range(21)), {{"a": list(range(21)), "b": list(range(21))}}, "f", "s", "n"), key="b2")
    c2.plotly_chart(figures.line_figure([0.1, 0.2, 0.3], {{"a": [1, 0.5, 0.2]}}, "r", "eps", "acc"), key="b3")
'''


def streamlit_figure(variant: str):  # type: ignore[no-untyped-def]
    """The variant as a go.Figure (unvalidated, as the app builds it), cached per process."""
    cache = globals().setdefault("_CACHE", {})
    if not cache:
        cache.update(variants(panels()))
    return figures._unvalidated_figure(json.loads(json.dumps(cache[variant])))


def time_streamlit(pw, names: list[str], repeats: int) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    """Click-to-painted seconds of each variant in a Streamlit app (as bench_app.attack_latency), alternated."""
    import tempfile

    from app_server import start_server, stop_server
    from bench_app import attack_latency

    script = Path(tempfile.mkdtemp(prefix="gccs-anim-")) / "anim_app.py"
    script.write_text(STREAMLIT_APP)
    proc, url = start_server(script, env={"PYTHONPATH": str(ROOT / "bench")})
    times: dict[str, list[float]] = {k: [] for k in names}
    try:
        browser = launch_browser(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        attack_latency(page, url, 0.1, 100, extra="&variant=full", path="")  # warm-up
        for _ in range(repeats):
            for name in names:
                v, _, rest = name.partition("+")
                extra = f"&variant={v}" + (f"&{rest}=1" if rest else "")
                times[name].append(attack_latency(page, url, 0.1, 100, extra=extra, path=""))
        browser.close()
    finally:
        stop_server(proc)
    return times


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--only", nargs="*", default=None, help="variant names to time (default: all)")
    ap.add_argument("--streamlit", action="store_true", help="time the variants in a Streamlit app instead")
    a = ap.parse_args(argv)
    if a.streamlit:
        with sync_playwright() as pw:
            st_times = time_streamlit(pw, a.only or list(variants(panels())), a.repeats)
        # "<variant>+page": also what the Attack page draws below; "+burn": 1 s of server CPU after the chart
        for k, v in st_times.items():
            print(f"{k:<28} streamlit click-to-paint median {statistics.median(v):.3f} s  min {min(v):.3f} s")
        return 0
    specs = {k: json.dumps(v) for k, v in variants(panels()).items() if a.only is None or k in a.only}
    times: dict[str, list[float]] = {k: [] for k in specs}
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_content("<html><body></body></html>")
        page.add_script_tag(path=str(PLOTLY_JS))
        for spec in specs.values():  # warm-up: plotly's first plot compiles a lot
            page.evaluate(DRAW, spec)
        for _ in range(a.repeats):
            for name, spec in specs.items():
                times[name].append(page.evaluate(DRAW, spec))
        browser.close()
    rows = [{"variant": k, "json_kb": round(len(specs[k]) / 1024, 1), "median_ms": round(statistics.median(v), 1),
             "min_ms": round(min(v), 1)} for k, v in times.items()]
    for r in rows:
        print(f"{r['variant']:<28} {r['json_kb']:>8.1f} kB  median {r['median_ms']:>7.1f} ms  min {r['min_ms']:>7.1f} ms")
    if a.json:
        a.json.write_text(json.dumps({"plotly_js": plotly.__version__, "repeats": a.repeats, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

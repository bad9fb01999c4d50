"""App speed and memory, measured in a real headless browser (Debian chromium via playwright).

1. Start-up: from launching `streamlit run` to the first plotly points painted in the browser, for the app
   (latent page, pretrained GCCS + cross-entropy, shipped projections) and for a bare one-chart
   Streamlit app (one plotly scatter of as many points) measured the same way, in the same run, each repeat
   a pair whose order alternates (bare first, then app first, ...).
2. Attack animation: after the background warm-up, from the click on "Run attack" (100 samples, PGD,
   20 steps, two models; a fresh eps each time so no cache helps) to the animation's points painted,
   median and 90th percentile over the clicks; plus the server's share (attacks + projection + figure,
   from the app's log). Also the first click of a new user, on a fresh server right after the first
   page is drawn (before the warm-up has loaded torch and the models).
3. Memory: RSS of the server with that one session after the attacks, and again after the session
   switched to UMAP and ran an attack in the UMAP view (UMAP import + compile + fit).

    NUMBA_CACHE_DIR=.numba_cache python bench/bench_app.py --repeats 3 --out bench/app_results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from app_server import launch_browser, rss_mb, start_server, stop_server, wait_script_idle  # bench/app_server.py

ROOT = Path(__file__).resolve().parent.parent

BARE_APP = '''
import numpy as np
import plotly.graph_objects as go
import streamlit as st

rng = np.random.default_rng(0)
xy = rng.standard_normal((720, 2)).astype(np.float32)
st.plotly_chart(go.Figure(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers")))
'''
BARE_ANIMATION_APP = '''
import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

n, steps = int(st.query_params.get("n_samples", 100)), 21
seed = int(float(st.query_params.get("eps", 0.1)) * 1000)
clicked = st.button("Run", key="run_attack")
rng = np.random.default_rng(seed)
paths = np.cumsum(rng.standard_normal((steps if clicked else 1, 2, n, 2)).astype(np.float32), axis=0)
fig = make_subplots(rows=1, cols=2)
for c in (1, 2):
    fig.add_trace(go.Scatter(x=paths[0, c - 1, :, 0], y=paths[0, c - 1, :, 1], mode="markers"), row=1, col=c)
fig.frames = [go.Frame(name=str(t), traces=[0, 1], data=[go.Scatter(x=paths[t, c, :, 0], y=paths[t, c, :, 1],
              mode="markers", marker={"color": rng.integers(0, 10, n).astype(np.float32)}) for c in (0, 1)])
              for t in range(len(paths))]
st.plotly_chart(fig, key="attack_anim")
'''
PAINTED = ".js-plotly-plot .scatterlayer .trace .point"
PREVIEW_PAINTED = ".st-key-attack_anim .js-plotly-plot .scatterlayer .trace .point"
ANIMATION_READY = """() => {
  const el = document.querySelector('.st-key-attack_anim .js-plotly-plot');
  return !!el && !!el._transitionData && el._transitionData._frames.length > 1
      && el.querySelectorAll('.scatterlayer .trace .point').length > 0;
}"""


def time_to_first_paint(playwright, script: Path, env: dict[str, str], log: Path) -> tuple[float, object, str]:  # type: ignore[no-untyped-def]
    """Seconds from launching the server to plotted points in the page; returns the server still running."""
    t0 = time.perf_counter()
    proc, url = start_server(script, env=env, log=log)
    browser = launch_browser(playwright)
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(url)
    page.wait_for_selector(PAINTED, timeout=120_000)
    elapsed = time.perf_counter() - t0
    return elapsed, (proc, browser, page), url


def wait_warm(log: Path, timeout: float = 300.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if "GCCS warm-up done" in log.read_text(errors="replace"):
            return time.perf_counter() - t0
        time.sleep(0.5)
    raise TimeoutError("the app's warm-up did not finish")


def attack_latency(page, url: str, eps: float, n: int, extra: str = "", path: str = "/attack") -> float:  # type: ignore[no-untyped-def]
    page.goto(f"{url}{path}?eps={eps}&n_samples={n}&steps=20&attack=pgd&samples=random{extra}")
    wait_script_idle(page)
    # as a user would: click once the page is drawn, i.e. after the one-frame preview chart is painted
    # (clicking while the browser still parses plotly for the preview would time that parse too)
    page.wait_for_selector(PREVIEW_PAINTED, timeout=120_000)
    page.wait_for_timeout(300)
    button = page.locator(".st-key-run_attack button")
    t0 = time.perf_counter()
    button.click()
    # the page shows a one-frame preview before the click: wait for the animation (frames > 1), then its points
    page.wait_for_function(ANIMATION_READY, timeout=300_000)
    elapsed = time.perf_counter() - t0
    wait_script_idle(page)
    return elapsed


def _p90(values: list[float]) -> float:
    """The 90th percentile (inclusive method: never above the largest value measured)."""
    if len(values) < 2:
        return float(values[0]) if values else float("nan")
    return round(statistics.quantiles(values, n=10, method="inclusive")[-1], 3)


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--attacks", type=int, default=9, help="timed attack clicks (and bare-animation clicks)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "app_results.json")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gccs-bench-"))
    bare = tmp / "bare_app.py"
    bare.write_text(BARE_APP)
    bare_anim = tmp / "bare_animation_app.py"
    bare_anim.write_text(BARE_ANIMATION_APP)
    env = {"GCCS_USER_MODELS": str(tmp / "user_models")}
    results: dict[str, object] = {"bare_first_paint_s": [], "app_first_paint_s": [], "attack_anim_s": []}
    with sync_playwright() as pw:
        for r in range(args.repeats):
            pair = [("bare", bare), ("app", ROOT / "app" / "main.py")]
            for name, script in (pair if r % 2 == 0 else pair[::-1]):  # alternate which of the two starts first
                log = tmp / f"{name}-{r}.log"
                secs, (proc, browser, page), url = time_to_first_paint(pw, script, env, log)
                results[f"{name}_first_paint_s"].append(round(secs, 3))  # type: ignore[union-attr]
                print(f"repeat {r}: {name} first paint {secs:.2f} s", flush=True)
                if name == "app" and r == 0:
                    # a new user: the first click on the Attack page right after the first page is drawn, before
                    # the background warm-up has loaded torch and the models
                    t_paint = time.perf_counter()
                    lat = attack_latency(page, url, 0.11, args.samples)
                    results["first_click_after_start_s"] = round(lat, 3)
                    results["first_click_since_first_paint_s"] = round(time.perf_counter() - t_paint, 1)
                    print(f"first attack click after start: {lat:.2f} s", flush=True)
                if name == "app" and r == args.repeats - 1:
                    results["warm_up_s"] = round(wait_warm(log), 1)
                    for i in range(args.attacks):
                        lat = attack_latency(page, url, round(0.1 + 0.01 * i, 2), args.samples)
                        results["attack_anim_s"].append(round(lat, 3))  # type: ignore[union-attr]
                        print(f"attack animation ({args.samples} samples, 2 models): {lat:.2f} s", flush=True)
                    server = [float(line.split("ready in ")[1].split()[0]) for line in log.read_text().splitlines()
                              if "GCCS attack ready in" in line]
                    results["attack_server_s"] = server
                    print(f"server side (attacks + projection + figure): {server}", flush=True)
                    results["server_rss_mb"] = round(rss_mb(proc.pid), 0)
                    print(f"server RSS with one session: {results['server_rss_mb']} MB", flush=True)
                    # then the same session uses UMAP (latent page + an attack in the UMAP view)
                    page.goto(f"{url}/?method=umap")
                    page.wait_for_selector(PAINTED, timeout=120_000)
                    t0 = time.perf_counter()
                    lat = attack_latency(page, url, 0.15, args.samples, extra="&method=umap")
                    results["umap_attack_anim_s"] = round(lat, 2)
                    results["umap_attack_incl_compile_s"] = round(time.perf_counter() - t0, 1)
                    results["server_rss_after_umap_mb"] = round(rss_mb(proc.pid), 0)
                    print(f"UMAP attack {lat:.2f} s; RSS after UMAP: {results['server_rss_after_umap_mb']} MB", flush=True)
                browser.close()
                stop_server(proc)
        # reference: a bare Streamlit app whose button draws a plotly animation of the same shape (2 panels,
        # 100 moving points, 21 frames) from random numbers, measured the same way (no torch, no attack)
        proc, url = start_server(bare_anim, env=env, log=tmp / "bare-anim.log")
        browser = launch_browser(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        results["bare_animation_s"] = [round(attack_latency(page, url, round(0.1 + 0.01 * i, 2), args.samples, path=""), 3)
                                       for i in range(args.attacks)]
        print(f"bare animation app: {results['bare_animation_s']}", flush=True)
        browser.close()
        stop_server(proc)
    bare_m = statistics.median(results["bare_first_paint_s"])  # type: ignore[arg-type]
    app_m = statistics.median(results["app_first_paint_s"])  # type: ignore[arg-type]
    pairs = [a / b for a, b in zip(results["app_first_paint_s"], results["bare_first_paint_s"])]  # type: ignore[arg-type]
    results.update({"bare_median_s": bare_m, "app_median_s": app_m, "ratio": round(app_m / bare_m, 2),
                    "paired_ratio_median": round(statistics.median(pairs), 2),  # each pair runs back to back
                    "attack_anim_median_s": statistics.median(results["attack_anim_s"]),  # type: ignore[arg-type]
                    "attack_anim_p90_s": _p90(results["attack_anim_s"]),  # type: ignore[arg-type]
                    "bare_animation_median_s": statistics.median(results["bare_animation_s"]),  # type: ignore[arg-type]
                    "samples": args.samples, "repeats": args.repeats})
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

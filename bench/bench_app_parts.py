"""Server-side parts of the attack animation, timed alone (run by hand, not a test).

    python bench/bench_app_parts.py [--repeats 5] [--json bench/results/app_parts.json]

1. Building the 100-sample, 2-model, 21-frame attack figure (``app.figures.animation_figure``, which skips
   plotly's per-trace validation) against validating the very same figure spec with ``go.Figure(spec)``.
2. Placing 2,100 attack-frame latents (21 frames x 100 samples) in a UMAP view fitted on the 360 digits test
   latents of ``pretrained/digits-gccs``: ``LatentProjection(new_points="knn")`` (the default) against
   ``new_points="umap"`` (``umap.UMAP.transform``), each after one warm-up call.

3. One "Run attack" click on the Attack page (AppTest, the shipped digits models, 100 samples, PGD 20 steps,
   a new eps per click): the whole rerun (sidebar + page) and its ``attacking.run`` part (attacks + projection +
   animation figure), after one first click that fills the caches shared by every eps (robust-accuracy curve).

Medians of ``--repeats`` runs; one torch/numba thread, as in the app.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _median_time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_figure(repeats: int) -> dict:
    import plotly.graph_objects as go

    from app import figures
    from gccs_core.views import Panel

    rng = np.random.default_rng(0)
    steps, n, m, k = 21, 100, 360, 10

    def panel() -> Panel:
        return Panel(title="t", frames=rng.standard_normal((steps, n, 2)).astype(np.float32),
                     pred=rng.integers(0, k, (steps, n)), y=rng.integers(0, k, n), protos=rng.standard_normal((k, 2)),
                     kind="simplex vertices", background=rng.standard_normal((m, 2)).astype(np.float32),
                     background_y=rng.integers(0, k, m), ellipses=rng.standard_normal((k, 2, 60, 2)))

    panels = [panel(), panel()]
    labels = [f"step {t}" for t in range(steps)]
    names = [str(c) for c in range(k)]
    fast = _median_time(lambda: figures.animation_figure(panels, names, labels), repeats)
    spec = figures.animation_figure(panels, names, labels).to_dict()
    validated = _median_time(lambda: go.Figure(spec), repeats)
    return {"name": "attack_figure_build", "unvalidated_s": fast, "validated_s": validated, "traces": len(spec["data"]),
            "frames": len(spec["frames"])}


def bench_umap_placement(repeats: int) -> dict:
    import torch

    from gccs_core import load_dataset, load_model
    from gccs_core.models import embed_batched
    from gccs_core.projection import LatentProjection

    torch.set_num_threads(1)
    ds = load_dataset("digits", "test")
    z = embed_batched(load_model(ROOT / "pretrained" / "digits-gccs.safetensors"), ds.x)[0].numpy()
    frames = np.repeat(z[:100][None], 21, 0) + np.random.default_rng(0).normal(0, 0.5, (21, 100, z.shape[1]))
    out = {"name": "umap_new_points_2100"}
    for mode in ("knn", "umap"):
        proj = LatentProjection("umap", new_points=mode).fit(z, ds.y.numpy())
        out[f"{mode}_s"] = _median_time(lambda p=proj: p.transform(frames), repeats)
    return out


def bench_attack_click(repeats: int) -> dict:
    import os

    os.environ.setdefault("GCCS_APP_WARM", "0")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    for k, v in {"eps": "0.1", "n_samples": "100", "steps": "20", "attack": "pgd", "samples": "random"}.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("app_pages/attack.py").run()
    at.button(key="run_attack").click().run()  # torch, models, dataset and the robust curve of these samples
    whole, run = [], []
    for i in range(max(repeats, 2)):
        at.slider(key="eps").set_value(round(0.11 + 0.02 * i, 2))  # past 0.15 too (the old curve followed eps)
        t0 = time.perf_counter()
        at.button(key="run_attack").click().run()
        whole.append(time.perf_counter() - t0)
        if at.exception:
            raise RuntimeError(str(at.exception))
        run.append(float(at.session_state["attack_out"]["seconds"]))
    return {"name": "attack_click_rerun", "whole_rerun_s": statistics.median(whole), "whole_max_s": max(whole),
            "attacking_run_s": statistics.median(run), "clicks": len(whole)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    results = [bench_figure(a.repeats), bench_umap_placement(a.repeats), bench_attack_click(a.repeats)]
    fig, um, click = results
    print(f"attack figure ({fig['traces']} traces, {fig['frames']} frames): built {fig['unvalidated_s']:.3f} s; "
          f"validating the same spec {fig['validated_s']:.3f} s")
    print(f"UMAP placement of 2,100 frame latents: knn {um['knn_s']:.3f} s, umap.UMAP.transform {um['umap_s']:.3f} s")
    print(f"Attack page click (100 samples, 2 models): whole rerun median {click['whole_rerun_s']:.3f} s "
          f"(max {click['whole_max_s']:.3f} s), of which attacking.run {click['attacking_run_s']:.3f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

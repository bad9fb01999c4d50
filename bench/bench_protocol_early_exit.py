"""The study's strong protocol with and without early exit in its prediction-only attacks (benchmark, by hand).

    .venv/bin/python bench/bench_protocol_early_exit.py [--n 100] [--threads 2]

``gccs_core.study.protocols`` is not changed: this script runs ``strong_protocol`` as it is, then again with
its ``_attack_pred`` (the attacks whose predictions alone are used) calling ``run_attack(early_exit=True)``.
The transfer attack's adversarial inputs (``_attack_x``) are left alone: early exit returns the first
successful iterate, which transfers less well. Prints both wall times and whether the per-example robust
vectors are identical; writes bench/results/protocol_early_exit.json. Label the figures with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from gccs_core.attacks import run_attack
from gccs_core.checkpoint import load_model
from gccs_core.data import load_dataset
from gccs_core.study import protocols

ROOT = Path(__file__).resolve().parents[1]


def _attack_pred_early_exit(model, x, y, seed, target_all=None, **kw):  # type: ignore[no-untyped-def]
    """``protocols._attack_pred`` with early exit (same batches, seeds and targets)."""
    out = [torch.zeros(0, dtype=torch.long)]
    for i in range(0, len(x), protocols.BATCH):
        extra = {"target": target_all[i : i + protocols.BATCH]} if target_all is not None else {}
        out.append(run_attack(model, x[i : i + protocols.BATCH], y[i : i + protocols.BATCH], seed=seed + i,
                              early_exit=True, **kw, **extra).pred)
    return torch.cat(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "pretrained" / "mnist5k-gccs.safetensors"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--eps", default="0.05,0.1")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--square-queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "protocol_early_exit.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.checkpoint)
    ds = load_dataset("mnist5k", "test", limit=a.n)
    eps = [float(e) for e in a.eps.split(",")]
    kw = dict(steps=a.steps, restarts=a.restarts, square_queries=a.square_queries, seed=0)
    load_before = os.getloadavg()
    original = protocols._attack_pred
    results, times = {}, {}
    for name in ("as_is", "early_exit"):
        protocols._attack_pred = original if name == "as_is" else _attack_pred_early_exit
        try:
            t0 = time.perf_counter()
            results[name] = protocols.strong_protocol(model, ds.x, ds.y, eps, **kw)
            times[name] = time.perf_counter() - t0
        finally:
            protocols._attack_pred = original
    same = all(results["as_is"]["eps"][k]["robust"] == results["early_exit"]["eps"][k]["robust"]
               for k in results["as_is"]["eps"])
    robust = {name: {k: sum(v["robust"]) / a.n for k, v in r["eps"].items()} for name, r in results.items()}
    out = {"checkpoint": os.path.relpath(a.checkpoint, ROOT), "n": a.n, "eps": eps, **kw, "threads": a.threads,
           "load_average_before": load_before, "load_average_after": os.getloadavg(), "wall_s": times,
           "speedup": times["as_is"] / times["early_exit"], "robust_vectors_identical": same, "robust_accuracy": robust}
    print(f"strong protocol, {a.n} mnist5k digits, eps {eps}: as is {times['as_is']:.1f} s, with early exit "
          f"{times['early_exit']:.1f} s ({out['speedup']:.2f}x); per-example robust vectors identical: {same}; "
          f"robust accuracy {robust}; load average {load_before} -> {out['load_average_after']}")
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

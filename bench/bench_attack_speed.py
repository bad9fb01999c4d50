"""PGD-20 with and without trajectories, with and without early exit (benchmark, run by hand, not a test).

    .venv/bin/python bench/bench_attack_speed.py [--threads 2] [--reps 3] [--n 200]

On the first ``n`` mnist5k test digits of ``pretrained/mnist5k-gccs`` (L-inf eps 0.1, margin objective,
float32): the median wall time of alternated repetitions of each variant, the robust accuracy of each
(early exit must not change it), and the machine's load average (a loaded machine slows every variant
alike; the ratios mean more than the seconds). Also the floor of any PGD-20 on this model: 20 bare
forward + backward passes to the input of the attack's fast copy (folded batch norm, channels-last, frozen
weights), no projection or bookkeeping, in float32 and under bf16 autocast. Writes bench/results/attack_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from gccs_core.attacks import run_attack
from gccs_core.attacks.objectives import attack_objective
from gccs_core.checkpoint import load_model
from gccs_core.data import load_dataset
from gccs_core.models import attack_copy

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 2.0
VARIANTS = {"no_trajectory": dict(record=False), "trajectory": dict(record=True),
            "trajectory_early_exit": dict(record=True, early_exit=True), "early_exit": dict(early_exit=True)}


def bare_passes(model, x: torch.Tensor, y: torch.Tensor, amp: str, steps: int = 20) -> float:  # type: ignore[no-untyped-def]
    """Seconds for ``steps`` forward + backward passes to the input, nothing else (the floor of PGD-``steps``)."""
    t0 = time.perf_counter()
    for _ in range(steps):
        xa = x.detach().requires_grad_(True)
        loss, _, _ = attack_objective(model, xa, y, "margin", None, amp)
        torch.autograd.grad(loss.sum(), xa)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "pretrained" / "mnist5k-gccs.safetensors"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "attack_speed.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.checkpoint)
    ds = load_dataset("mnist5k", "test", limit=a.n)
    run_attack(model, ds.x[:20], ds.y[:20], "pgd", eps=0.1, steps=2, record=True)  # warm-up
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    robust: dict[str, float] = {}
    fast = attack_copy(model)
    floors: dict[str, list[float]] = {"float32": [], "bf16": []}
    for r in range(a.reps):
        floors["float32"].append(bare_passes(fast, ds.x, ds.y, "none"))
        floors["bf16"].append(bare_passes(fast, ds.x, ds.y, "bf16"))
        for name, kw in VARIANTS.items():  # alternated, so load changes hit every variant alike
            t0 = time.perf_counter()
            res = run_attack(model, ds.x, ds.y, "pgd", eps=0.1, steps=20, objective="margin", seed=r, **kw)
            times[name].append(time.perf_counter() - t0)
            robust.setdefault(name, float((~res.success).float().mean()))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"checkpoint": os.path.relpath(a.checkpoint, ROOT), "n": a.n, "eps": 0.1, "steps": 20, "objective": "margin",
           "threads": a.threads, "reps": a.reps, "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "load_average_before": load_before, "load_average_after": os.getloadavg(), "median_s": med, "runs_s": times,
           "robust_accuracy_seed0": robust, "target_s": TARGET_S,
           "floor_20_passes_median_s": {k: statistics.median(v) for k, v in floors.items()}, "floor_runs_s": floors,
           "trajectory_over_no_trajectory": med["trajectory"] / med["no_trajectory"],
           "early_exit_speedup_with_trajectory": med["trajectory"] / med["trajectory_early_exit"]}
    for k in VARIANTS:
        print(f"PGD-20 {k:24s} {med[k]:6.2f} s  (runs {', '.join(f'{t:.2f}' for t in times[k])})  "
              f"robust accuracy {robust[k]:.3f}")
    for k, v in out["floor_20_passes_median_s"].items():
        print(f"floor: 20 bare forward+backward passes, {k:7s} {v:6.2f} s")
    print(f"trajectory / none {out['trajectory_over_no_trajectory']:.2f}; early exit speed-up (with trajectory) "
          f"{out['early_exit_speedup_with_trajectory']:.2f}x; load average {load_before} -> {out['load_average_after']}")
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

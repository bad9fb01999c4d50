"""Speed benchmarks of the attacks and the evaluation (benchmarks, not tests).

    .venv/bin/python bench/bench_attacks.py [--checkpoint pretrained/mnist5k-gccs.safetensors] [--threads 2]
        [--skip-suite] [--skip-agreement] [--json bench/results.json]

1. PGD-20 (L-inf, eps 0.1, margin objective) with the whole trajectory recorded, 200 mnist5k test
   digits (target: under 2 s on 2 CPU cores), in float32 and with ``amp="bf16"`` (gradients under
   bfloat16 autocast). Reported as the median of 3 runs after a warm-up.
2. Whether bf16 weakens the attack: PGD-20 robust accuracy, float32 against bf16, for every
   pretrained mnist5k model at eps 0.05 / 0.1 / 0.15 on 500 test digits (ce and margin objectives).
3. The full evaluation suite (``evaluate_checkpoint`` defaults) on 500 mnist5k test digits at
   eps 0.05, 0.1, 0.2, 0.3 (target: under 5 minutes on 2 CPU cores).

Prints the timings, the thread count and the machine's load average (the numbers mean little on a
shared, loaded machine; the load is printed so the reader can judge).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from gccs_core.attacks import run_attack
from gccs_core.checkpoint import load_model
from gccs_core.data import load_dataset
from gccs_core.evaluate import evaluate_checkpoint

ROOT = Path(__file__).resolve().parents[1]

PGD_TARGET_S = 2.0
SUITE_TARGET_S = 300.0


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_pgd_trajectory(checkpoint: str, n: int = 200, repeats: int = 3, amp: str = "none", device: str = "cpu") -> dict:
    """Median wall time of PGD-20 with trajectories on n mnist5k test digits."""
    model = load_model(checkpoint).to(device)
    ds = load_dataset("mnist5k", "test", limit=n)
    run_attack(model, ds.x[:20], ds.y[:20], "pgd", eps=0.1, steps=2, record=True, amp=amp)  # warm-up
    times = []
    for r in range(repeats):
        _sync()
        t0 = time.perf_counter()
        res = run_attack(model, ds.x, ds.y, "pgd", eps=0.1, steps=20, objective="margin", record=True, seed=r, amp=amp)
        _sync()
        times.append(time.perf_counter() - t0)
    tr = res.trajectory
    assert tr is not None and tr.x.shape[0] == 21
    return {"name": f"pgd20_trajectory_200_{amp}", "amp": amp, "n": n, "steps": 20, "median_s": statistics.median(times),
            "runs_s": times, "target_s": PGD_TARGET_S, "frames": int(tr.x.shape[0]),
            "robust_accuracy": float((~res.success).float().mean())}


def bench_amp_agreement(n: int = 500, eps: tuple[float, ...] = (0.05, 0.1, 0.15)) -> dict:
    """PGD-20 robust accuracy in float32 and in bf16 for each pretrained mnist5k model (fractions of n)."""
    ds = load_dataset("mnist5k", "test", limit=n)
    rows = []
    for path in sorted((ROOT / "pretrained").glob("mnist5k-*.safetensors")):
        model = load_model(path)
        for objective in ("ce", "margin"):
            for e in eps:
                acc = {amp: float((~run_attack(model, ds.x, ds.y, "pgd", eps=e, steps=20, objective=objective,
                                               seed=0, amp=amp).success).float().mean()) for amp in ("none", "bf16")}
                rows.append({"model": path.stem, "objective": objective, "eps": e, "fp32": acc["none"], "bf16": acc["bf16"]})
                print(f"  {path.stem:18s} {objective:6s} eps {e:<5g} fp32 {acc['none']:.3f}  bf16 {acc['bf16']:.3f}", flush=True)
    diffs = [r["bf16"] - r["fp32"] for r in rows]
    return {"name": "amp_agreement", "n": n, "eps": list(eps), "rows": rows, "max_bf16_minus_fp32": max(diffs),
            "mean_bf16_minus_fp32": statistics.mean(diffs)}


def bench_suite(checkpoint: str, n: int = 500, device: str = "cpu") -> dict:
    """Wall time of the full evaluation at 4 eps on n mnist5k test digits."""
    eps = [0.05, 0.1, 0.2, 0.3]
    t0 = time.perf_counter()
    rep = evaluate_checkpoint(checkpoint, eps, n=n, progress=True, device=device)
    wall = time.perf_counter() - t0
    return {"name": "full_suite_500_4eps", "n": n, "eps": eps, "wall_s": wall, "target_s": SUITE_TARGET_S,
            "worst_case": rep.worst_case(), "clean_accuracy": rep.clean_accuracy, "attacks": list(rep.attacks)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "pretrained" / "mnist5k-gccs.safetensors"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the targets are for 2 CPU cores)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    info = {"checkpoint": a.checkpoint, "threads": a.threads, "device": a.device,
            "gpu": torch.cuda.get_device_name() if a.device == "cuda" else None, "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "load_average_before": os.getloadavg()}
    results = []
    for amp in ("none", "bf16"):
        results.append(bench_pgd_trajectory(a.checkpoint, amp=amp, device=a.device))
        r = results[-1]
        runs = ", ".join(f"{t:.2f}" for t in r["runs_s"])
        print(f"PGD-20 + trajectories, {r['n']} digits, amp={amp}: median {r['median_s']:.2f}s (runs {runs}; "
              f"target {PGD_TARGET_S:g}s) {'OK' if r['median_s'] <= PGD_TARGET_S else 'OVER'}; "
              f"robust accuracy {r['robust_accuracy']:.3f}", flush=True)
    if not a.skip_agreement:
        print("PGD-20 robust accuracy, float32 vs bf16 gradients (500 mnist5k test digits):", flush=True)
        results.append(bench_amp_agreement())
        r = results[-1]
        print(f"bf16 - fp32 robust accuracy: max {100 * r['max_bf16_minus_fp32']:+.1f} points, "
              f"mean {100 * r['mean_bf16_minus_fp32']:+.2f} points", flush=True)
    if not a.skip_suite:
        results.append(bench_suite(a.checkpoint, device=a.device))
        r = results[-1]
        print(f"full suite, {r['n']} digits x {len(r['eps'])} eps: {r['wall_s']:.1f}s (target {SUITE_TARGET_S:g}s) "
              f"{'OK' if r['wall_s'] <= SUITE_TARGET_S else 'OVER'}; worst case {r['worst_case']}", flush=True)
    info["load_average_after"] = os.getloadavg()
    print(f"threads={a.threads}, load average before {info['load_average_before']}, after {info['load_average_after']}")
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

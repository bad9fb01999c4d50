"""GCCS against cross-entropy per training step, alternated, median of per-round ratios (a benchmark run by hand).

    .venv/bin/python bench/bench_loss_step.py [--rounds 15] [--threads 1] [--cases mlp,cnn] [--out FILE]

Each round runs ``steps`` full training steps (encoder forward, loss, backward, gradient clipping, AdamW step,
as ``bench_peers._step_runner``) with GCCS, then with CE (order swapped every round), and records the ratio
GCCS / CE of that round; the figure is the median of those ratios, steadier on a loaded machine than the
ratio of medians. The loss alone (forward + backward on a fixed latent batch) is timed the same way.
Results go to bench/results/loss_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import _step_runner  # noqa: E402

from gccs_core import load_dataset  # noqa: E402
from gccs_core.files import atomic_write_text  # noqa: E402
from gccs_core.losses import build_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = {"mlp": ("digits", 50), "cnn": ("mnist5k", 3)}


def _rounds(runners: dict, rounds: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(rounds):
        for name in (list(runners) if r % 2 == 0 else list(reversed(runners))):
            t = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t)
    ratios = [g / c for g, c in zip(times["gccs"], times["ce"])]
    return {"gccs_s": statistics.median(times["gccs"]), "ce_s": statistics.median(times["ce"]),
            "ratio_median_of_rounds": statistics.median(ratios), "ratios": ratios}


def _loss_runner(name: str, z: torch.Tensor, y: torch.Tensor, calls: int):
    loss = build_loss(name, 10, z.shape[1])
    z = z.clone().requires_grad_()

    def run() -> None:
        for _ in range(calls):
            loss(z, y).backward()

    run()
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cases", default="mlp,cnn")
    p.add_argument("--label", default="loaded machine")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "loss_step.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    out = {"threads": a.threads, "rounds": a.rounds, "torch": torch.__version__, "label": a.label,
           "load_average_start": os.getloadavg(), "cases": {}}
    g = torch.Generator().manual_seed(0)
    for d in (16, 512):
        z, y = torch.randn(128 if d == 16 else 64, d, generator=g), torch.arange(128 if d == 16 else 64) % 10
        calls = 100 if d == 16 else 10
        t = _rounds({k: _loss_runner(k, z, y, calls) for k in ("gccs", "ce")}, a.rounds)
        row = {"gccs_us": 1e6 * t["gccs_s"] / calls, "ce_us": 1e6 * t["ce_s"] / calls,
               "ratio": t["ratio_median_of_rounds"]}
        out["cases"][f"loss_only_d{d}"] = row
        print(f"loss only d={d}: gccs {row['gccs_us']:.0f} us, ce {row['ce_us']:.0f} us per call", flush=True)
    for case in a.cases.split(","):
        dataset, steps = CASES[case]
        data = load_dataset(dataset, "train")
        x, y = data.x[:128], data.y[:128]
        t = _rounds({k: _step_runner(dataset, k, 16, x, y, steps, device) for k in ("gccs", "ce")}, a.rounds)
        row = {"dataset": dataset, "batch": 128, "latent_dim": 16, "steps_per_round": steps,
               "gccs_step_ms": 1e3 * t["gccs_s"] / steps, "ce_step_ms": 1e3 * t["ce_s"] / steps,
               "ratio": t["ratio_median_of_rounds"], "ratios": t["ratios"]}
        out["cases"][case] = row
        print(f"step {case}: gccs {row['gccs_step_ms']:.2f} ms, ce {row['ce_step_ms']:.2f} ms, "
              f"GCCS/CE {row['ratio']:.3f} (median of {a.rounds} rounds)", flush=True)
    out["load_average_end"] = os.getloadavg()
    atomic_write_text(a.out, json.dumps(out, indent=2) + "\n")
    print(f"load average {out['load_average_start'][0]:.1f} -> {out['load_average_end'][0]:.1f}; written to {a.out}")


if __name__ == "__main__":
    main()

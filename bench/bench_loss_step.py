"""GCCS against cross-entropy per training step, alternated, median of per-round ratios (a benchmark run by hand).

    .venv/bin/python bench/bench_loss_step.py [--rounds 15] [--threads 1] [--cases mlp,cnn] [--baseline REV] [--out FILE]

Each round runs ``steps`` full training steps (encoder forward, loss, backward, gradient clipping, AdamW step,
as ``bench_peers._step_runner``) with GCCS, then with CE (order swapped every round), and records the ratio
GCCS / CE of that round; the figure is the median of those ratios, steadier on a loaded machine than the
ratio of medians. The loss alone (forward + backward on a fixed latent batch) is timed the same way.
With ``--baseline REV`` the GCCS loss of git revision REV (gccs_core/losses.py as committed there) runs as a
third contender ``gccs_base`` in the same rounds: before and after under the same load.
Results go to bench/results/loss_step.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_peers import _step_runner  # bench/bench_peers.py (the script's own folder is on sys.path)

from gccs_core import load_dataset
from gccs_core.files import atomic_write_text
from gccs_core.losses import build_loss

ROOT = Path(__file__).resolve().parents[1]
CASES = {"mlp": ("digits", 50), "cnn": ("mnist5k", 3)}


def _baseline_loss_class(rev: str) -> type:
    """``GCCSLoss`` as committed at git revision ``rev``, loaded as a module of its own."""
    text = subprocess.run(["git", "show", f"{rev}:gccs_core/losses.py"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout
    path = Path(tempfile.mkdtemp()) / "losses_base.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("gccs_core._losses_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.GCCSLoss


def _rounds(runners: dict, rounds: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(rounds):
        for name in (list(runners) if r % 2 == 0 else list(reversed(runners))):
            t = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t)
    out = {f"{k}_s": statistics.median(v) for k, v in times.items()}
    for k in times:
        if k != "ce":
            ratios = [g / c for g, c in zip(times[k], times["ce"])]
            out[f"{k}_ratio_median_of_rounds"], out[f"{k}_ratios"] = statistics.median(ratios), ratios
    return out


def _loss_runner(name: str, z: torch.Tensor, y: torch.Tensor, calls: int, base: type | None = None):
    loss = base(10, z.shape[1]) if name == "gccs_base" else build_loss(name, 10, z.shape[1])
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
    p.add_argument("--baseline", default=None, help="git revision whose GCCS loss runs as a third contender")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "loss_step.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    out = {"threads": a.threads, "rounds": a.rounds, "torch": torch.__version__, "label": a.label,
           "load_average_start": os.getloadavg(), "cases": {}}
    base = _baseline_loss_class(a.baseline) if a.baseline else None
    names = ("gccs", "ce") + (("gccs_base",) if base else ())
    out["baseline"] = a.baseline
    g = torch.Generator().manual_seed(0)
    for d in (16, 512):
        z, y = torch.randn(128 if d == 16 else 64, d, generator=g), torch.arange(128 if d == 16 else 64) % 10
        calls = 100 if d == 16 else 10
        t = _rounds({k: _loss_runner(k, z, y, calls, base) for k in names}, a.rounds)
        row = {f"{k}_us": 1e6 * t[f"{k}_s"] / calls for k in names}
        row.update({f"{k}_ratio": t[f"{k}_ratio_median_of_rounds"] for k in names if k != "ce"})
        out["cases"][f"loss_only_d{d}"] = row
        print(f"loss only d={d} (forward + backward, us per call): "
              + ", ".join(f"{k} {row[f'{k}_us']:.0f}" for k in names), flush=True)
    for case in a.cases.split(","):
        dataset, steps = CASES[case]
        data = load_dataset(dataset, "train")
        x, y = data.x[:128], data.y[:128]
        runners = {k: _step_runner(dataset, k, 16, x, y, steps, device) for k in ("gccs", "ce")}
        if base:
            runners["gccs_base"] = _step_runner(dataset, "gccs", 16, x, y, steps, device, base)
        t = _rounds(runners, a.rounds)
        row = {"dataset": dataset, "batch": 128, "latent_dim": 16, "steps_per_round": steps}
        row.update({f"{k}_step_ms": 1e3 * t[f"{k}_s"] / steps for k in names})
        row.update({f"{k}_ratio": t[f"{k}_ratio_median_of_rounds"] for k in names if k != "ce"})
        row.update({f"{k}_ratios": t[f"{k}_ratios"] for k in names if k != "ce"})
        out["cases"][case] = row
        print(f"step {case}: " + ", ".join(f"{k} {row[f'{k}_step_ms']:.2f} ms" for k in names)
              + f"; GCCS/CE {row['gccs_ratio']:.3f}"
              + (f" (baseline {row['gccs_base_ratio']:.3f})" if base else "") + f", median of {a.rounds} rounds",
              flush=True)
    out["load_average_end"] = os.getloadavg()
    atomic_write_text(a.out, json.dumps(out, indent=2) + "\n")
    print(f"load average {out['load_average_start'][0]:.1f} -> {out['load_average_end'][0]:.1f}; written to {a.out}")


if __name__ == "__main__":
    main()

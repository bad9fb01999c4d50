"""Speed against the peers, side by side in one run (a benchmark run by hand, never a test).

    .venv/bin/python bench/bench_peers.py [--threads 2] [--reps 5] [--n 500] [--quick] [--device cpu]

1. Training step, GCCS against cross-entropy: one full step (encoder forward, loss, backward, gradient
   clipping, AdamW step: the calls of gccs_core.train's loop) on the same encoder and batch for
   * the MLP on sklearn digits (batch 128, d = 16),
   * the CNN on mnist5k (batch 128, d = 16),
   * ResNet-18 at 32 x 32 (CIFAR-10 shape, random images, balanced labels; d = 512, batch 64 on a CPU,
     256 on a GPU): the work does not depend on the pixel values.
   Goal GCCS / CE <= 1.05.
2. Attacks, on the same model (pretrained/mnist5k-ce), the same first ``--n`` mnist5k test digits and the
   same budget (L-inf eps 0.1, 20 iterations, cross-entropy, one random start):
   * our PGD (``gccs_core.attacks.run_attack``) without and with the recorded trajectory,
   * ART's ``ProjectedGradientDescentPyTorch`` (through ``gccs_core.attacks.art.art_pgd``, which passes
     the true labels and one random start),
   * the reference APGD-CE of the AutoAttack authors (``pyautoattack.autopgd_base.APGDAttack``, 20 iterations).
   Goals: ours / ART <= 0.5 without trajectory, <= 0.6 with it, robust accuracies within 2 points.

Every figure is the median of ``--reps`` repetitions, the contenders alternated inside each repetition so that
machine noise hits them alike. Wall time and this process's CPU time are both recorded (on a shared machine the
CPU time is the steadier one; the load average at start and end is printed so the reader can judge). Results go
to bench/results/peers.json (written atomically) and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gccs_core import TrainConfig, build_model, load_dataset, load_model
from gccs_core.attacks import run_attack
from gccs_core.attacks.art import art_pgd
from gccs_core.files import atomic_write_text
from gccs_core.train import make_optimizer

ROOT = Path(__file__).resolve().parents[1]

EPS, STEPS = 0.1, 20
ATTACK_MODEL = ROOT / "pretrained" / "mnist5k-ce.safetensors"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of one call."""
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return time.perf_counter() - w, time.process_time() - c, out


def _alternate(contenders: dict[str, Callable[[], Any]], reps: int, device: torch.device) -> dict[str, dict]:
    """Median wall and CPU time of each contender over ``reps`` rounds, alternating them inside every round."""
    wall: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    last: dict[str, Any] = {}
    for r in range(reps):
        names = list(contenders) if r % 2 == 0 else list(reversed(contenders))  # no contender always goes first
        for name in names:
            w, c, last[name] = _timed(contenders[name], device)
            wall[name].append(w)
            cpu[name].append(c)
    return {k: {"wall_s": statistics.median(wall[k]), "cpu_s": statistics.median(cpu[k]), "result": last[k]}
            for k in contenders}


# -- 1. training step -----------------------------------------------------------------------------


def _step_runner(dataset: str, loss: str, latent_dim: int, x: torch.Tensor, y: torch.Tensor, steps: int,
                 device: torch.device, head_class: type | None = None) -> Callable[[], None]:
    """``steps`` training steps of a fresh model (built once), as gccs_core.train runs them.

    ``head_class``: a loss class to use instead of ``loss``'s (another version of it, for before/after runs)."""
    config = TrainConfig(dataset=dataset, loss=loss, latent_dim=latent_dim, device=device.type)
    torch.manual_seed(0)
    model = build_model(config.model_spec())
    if head_class is not None:
        model.head = head_class(model.head.num_classes, latent_dim)
    model = model.to(device).train()
    optimizer = make_optimizer(model, config)

    def run() -> None:
        for _ in range(steps):
            z = model.embed(x)
            out = model.head(z, y)
            optimizer.zero_grad(set_to_none=True)
            out.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()

    run()  # warm-up (allocations, lazy init)
    return run


def bench_steps(reps: int, device: torch.device, quick: bool) -> list[dict]:
    digits, mnist = load_dataset("digits", "train"), load_dataset("mnist5k", "train")
    resnet_batch = 256 if device.type == "cuda" else (16 if quick else 64)
    g = torch.Generator().manual_seed(0)
    cases = [
        ("mlp", "digits", 16, digits.x[:128], digits.y[:128], 10 if quick else 50),
        ("cnn", "mnist5k", 16, mnist.x[:128], mnist.y[:128], 3 if quick else 10),
        ("resnet18", "cifar10", 512, torch.rand(resnet_batch, 3, 32, 32, generator=g),
         torch.arange(resnet_batch) % 10, 1 if quick else 2),
    ]
    rows = []
    for encoder, dataset, d, x, y, steps in cases:
        x, y = x.to(device), y.to(device)
        runners = {loss: _step_runner(dataset, loss, d, x, y, steps, device) for loss in ("gccs", "ce")}
        t = _alternate(runners, reps, device)
        row = {"encoder": encoder, "dataset": dataset, "batch": len(y), "latent_dim": d, "steps_per_rep": steps}
        for loss in ("gccs", "ce"):
            row[f"{loss}_step_ms"] = 1e3 * t[loss]["wall_s"] / steps
            row[f"{loss}_step_cpu_ms"] = 1e3 * t[loss]["cpu_s"] / steps
        row["ratio_wall"] = row["gccs_step_ms"] / row["ce_step_ms"]
        row["ratio_cpu"] = row["gccs_step_cpu_ms"] / row["ce_step_cpu_ms"]
        rows.append(row)
        print(f"  step {encoder:8s} GCCS/CE wall {row['ratio_wall']:.3f}  cpu {row['ratio_cpu']:.3f}", flush=True)
    return rows


# -- 2. attacks -----------------------------------------------------------------------------------


def _apgd_ce(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The reference APGD-CE (pyautoattack), 20 iterations, one restart; returns the adversarial inputs."""
    from pyautoattack.autopgd_base import APGDAttack

    attack = APGDAttack(model, n_iter=STEPS, norm="Linf", n_restarts=1, eps=EPS, seed=0, loss="ce",
                        device=device.type)
    return attack.perturb(x.to(device), y.to(device)).detach()


def bench_attacks(n: int, reps: int, device: torch.device) -> dict:
    model = load_model(ATTACK_MODEL).to(device).eval()
    data = load_dataset("mnist5k", "test", limit=n)
    x, y = data.x, data.y
    contenders: dict[str, Callable[[], Any]] = {
        "ours": lambda: run_attack(model, x, y, "pgd", eps=EPS, steps=STEPS, objective="ce", seed=0),
        "ours_trajectory": lambda: run_attack(model, x, y, "pgd", eps=EPS, steps=STEPS, objective="ce", seed=0,
                                              record=True),
        "art": lambda: art_pgd(model, x, y, EPS, STEPS, seed=0),
        "apgd_ce_reference": lambda: _apgd_ce(model, x, y, device),
    }
    # warm-up on a few digits: imports (ART pulls in numba), first allocations
    run_attack(model, x[:8], y[:8], "pgd", eps=EPS, steps=2, record=True)
    art_pgd(model, x[:8], y[:8], EPS, 2)
    _apgd_ce(model, x[:8], y[:8], device)
    t = _alternate(contenders, reps, device)
    robust = {name: float((~t[name]["result"].success).float().mean()) for name in ("ours", "ours_trajectory", "art")}
    with torch.no_grad():
        x_apgd = t["apgd_ce_reference"]["result"]
        robust["apgd_ce_reference"] = float((model(x_apgd).argmax(1).cpu() == y).float().mean())
    out: dict[str, Any] = {"model": str(ATTACK_MODEL.relative_to(ROOT)), "n": n, "eps": EPS, "steps": STEPS,
                           "norm": "linf", "objective": "ce"}
    for name in contenders:
        out[name] = {"wall_s": t[name]["wall_s"], "cpu_s": t[name]["cpu_s"], "robust_accuracy": robust[name]}
    for name in ("ours", "ours_trajectory", "apgd_ce_reference"):
        out[f"{name}_over_art"] = out[name]["wall_s"] / out["art"]["wall_s"]
    return out


def markdown(steps: list[dict], attacks: dict) -> str:
    lines = ["| encoder / dataset | batch | d | GCCS step | CE step | GCCS / CE (wall) | GCCS / CE (CPU time) |",
             "|---|---|---|---|---|---|---|"]
    for r in steps:
        lines.append(f"| {r['encoder']} / {r['dataset']} | {r['batch']} | {r['latent_dim']} | {r['gccs_step_ms']:.1f} ms "
                     f"| {r['ce_step_ms']:.1f} ms | {r['ratio_wall']:.3f} | {r['ratio_cpu']:.3f} |")
    lines += ["", f"Attacks on {attacks['model']}, {attacks['n']} mnist5k test digits, L-inf eps {attacks['eps']}, "
              f"{attacks['steps']} iterations, cross-entropy:", "",
              "| attack | time | time / ART PGD | robust accuracy |", "|---|---|---|---|"]
    labels = {"ours": "our PGD-20", "ours_trajectory": "our PGD-20, trajectory recorded", "art": "ART PGD-20",
              "apgd_ce_reference": "APGD-CE-20 (pyautoattack, reference)"}
    for name, label in labels.items():
        r = attacks[name]
        ratio = r["wall_s"] / attacks["art"]["wall_s"]
        lines.append(f"| {label} | {r['wall_s']:.2f} s | {ratio:.2f} | {100 * r['robust_accuracy']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--n", type=int, default=500, help="mnist5k test digits for the attacks")
    p.add_argument("--quick", action="store_true", help="fewer steps per repetition (a smoke run; figures are noisier)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "peers.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    steps = bench_steps(a.reps, device, a.quick)
    attacks = bench_attacks(a.n, a.reps, device)
    table = markdown(steps, attacks)
    print(table)
    result = {"machine": platform.processor() or platform.machine(), "device": str(device), "threads": a.threads,
              "torch": torch.__version__, "reps": a.reps, "quick": a.quick, "load_average_start": load_start,
              "load_average_end": os.getloadavg(), "seconds": time.perf_counter() - t0, "steps": steps,
              "attacks": attacks, "markdown": table}
    atomic_write_text(a.out, json.dumps(result, indent=2) + "\n")
    print(f"load average {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; written to {a.out}")


if __name__ == "__main__":
    main()

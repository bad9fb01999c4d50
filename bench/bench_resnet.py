"""ResNet-18 training throughput at 32x32 (run by hand, not a test): `python bench/bench_resnet.py [--device cuda]`.

Training images per second of one full training step (encoder forward under the run's autocast, loss on the
float32 latents, backward, gradient clipping, AdamW step: the same calls as gccs_core.train's loop) for GCCS and
for cross-entropy on the same ResNet-18 (CIFAR-10 shape, 10 classes), default batch 256 and latent dimension 512.
GCCS's extra cost is its per-class statistics (means, shrunk covariances, a batched Cholesky in float64), so the
ratio GCCS/CE of step times is what this measures; the inputs are random images with balanced labels, because
the work does not depend on the pixel values.

Each repetition times ``--steps`` steps of each loss after ``--warmup`` steps, alternating the two so that machine
noise hits both alike; the median over repetitions is reported. Two clocks: wall time (what a user waits; on a
GPU the only meaningful one) and, on the CPU, this process's CPU time, which other processes' load on a shared
machine barely affects (with one thread, CPU time is the work done). Prints a Markdown table, writes JSON to
bench/results/resnet_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from gccs_core import TrainConfig, build_model
from gccs_core.train import AMP_DTYPES, make_optimizer, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(loss: str, x: torch.Tensor, y: torch.Tensor, latent_dim: int, device: torch.device, amp: str,
               warmup: int, steps: int) -> tuple[float, float]:
    """Wall-clock and process-CPU seconds per training step (means over ``steps`` after ``warmup``)."""
    config = TrainConfig(dataset="cifar10", loss=loss, latent_dim=latent_dim, device=device.type, amp=amp)
    torch.manual_seed(0)
    model = build_model(config.model_spec()).to(device).train()
    optimizer = make_optimizer(model, config)
    dtype = AMP_DTYPES[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            z = model.embed(x)
        out = model.head(z.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per loss and repetition")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--amp", default="none", choices=tuple(AMP_DTYPES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/resnet_<device>.json)")
    a = parser.parse_args()
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, 3, 32, 32, generator=g).to(device)
    y = (torch.arange(a.batch) % 10)[torch.randperm(a.batch, generator=g)].to(device)

    times: dict[str, list[float]] = {"gccs": [], "ce": []}
    cpu_times: dict[str, list[float]] = {"gccs": [], "ce": []}
    for rep in range(a.reps):
        for loss in ("gccs", "ce") if rep % 2 == 0 else ("ce", "gccs"):
            wall, cpu = time_steps(loss, x, y, a.latent_dim, device, a.amp, a.warmup, a.steps)
            times[loss].append(wall)
            cpu_times[loss].append(cpu)
            print(f"rep {rep + 1}/{a.reps} {loss}: {wall:.3f} s/step wall, {cpu:.3f} s/step CPU", flush=True)
    g_s, c_s = statistics.median(times["gccs"]), statistics.median(times["ce"])
    g_cpu, c_cpu = statistics.median(cpu_times["gccs"]), statistics.median(cpu_times["ce"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result = {
        "device": str(device), "device_name": name, "threads": torch.get_num_threads(), "amp": a.amp,
        "batch": a.batch, "latent_dim": a.latent_dim, "steps": a.steps, "reps": a.reps, "torch": torch.__version__,
        "gccs_s_per_step": g_s, "ce_s_per_step": c_s, "gccs_images_per_s": a.batch / g_s, "ce_images_per_s": a.batch / c_s,
        "ratio_gccs_over_ce": g_s / c_s, "all_times": times,
        "cpu_clock": None if device.type != "cpu" else {
            "gccs_s_per_step": g_cpu, "ce_s_per_step": c_cpu, "gccs_images_per_s": a.batch / g_cpu,
            "ce_images_per_s": a.batch / c_cpu, "ratio_gccs_over_ce": g_cpu / c_cpu, "all_times": cpu_times},
    }
    print("\n| device | clock | threads | amp | batch | d | GCCS img/s | CE img/s | GCCS/CE step time |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [("wall", result)] + ([("process CPU", result["cpu_clock"])] if result["cpu_clock"] else [])
    for clock, r in rows:
        print(f"| {name} ({device}) | {clock} | {result['threads']} | {a.amp} | {a.batch} | {a.latent_dim} "
              f"| {r['gccs_images_per_s']:.1f} | {r['ce_images_per_s']:.1f} | {r['ratio_gccs_over_ce']:.3f} |")
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"resnet_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()

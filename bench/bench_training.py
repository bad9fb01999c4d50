"""Training-speed benchmark (run by hand, not a test): `python bench/bench_training.py`.

1. GCCS against cross-entropy: time of one training step (forward, loss, backward, AdamW step) on the
   same encoder and batch, as a ratio (goal <= 1.05).
2. The library's training loop (`gccs_core.train`) against a bare PyTorch loop doing the same work
   (same model, data, batch order, optimizer, schedule and evaluation per epoch), as a ratio (goal <= 1.10).

Each measurement is the median of several repetitions, alternating the two contenders so that
machine noise hits both alike. Results are printed as a Markdown table and written to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from gccs_core import TrainConfig, build_model, load_dataset, train
from gccs_core.train import lr_at, make_optimizer


def time_steps(model, x, y, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(3):  # warm-up
        loss, _ = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def step_ratio(dataset: str, batch: int, latent_dim: int, steps: int, reps: int) -> dict:
    cfg = {loss: TrainConfig(dataset=dataset, loss=loss, latent_dim=latent_dim) for loss in ("gccs", "ce")}
    data = load_dataset(dataset, "train")
    x, y = data.x[:batch], data.y[:batch]
    times: dict[str, list[float]] = {"gccs": [], "ce": []}
    for _ in range(reps):
        for loss in ("gccs", "ce"):
            torch.manual_seed(0)
            times[loss].append(time_steps(build_model(cfg[loss].model_spec()), x, y, steps))
    g, c = statistics.median(times["gccs"]), statistics.median(times["ce"])
    return {"dataset": dataset, "encoder": cfg["ce"].resolved_encoder, "batch": batch, "latent_dim": latent_dim,
            "gccs_ms": 1e3 * g, "ce_ms": 1e3 * c, "ratio": g / c}


def bare_loop(config: TrainConfig) -> float:
    """The same training as gccs_core.train, written as a plain PyTorch loop (no checkpoints, no callbacks)."""
    torch.manual_seed(config.seed)
    tr, te = load_dataset(config.dataset, "train"), load_dataset(config.dataset, "test")
    model = build_model(config.model_spec())
    opt = make_optimizer(model, config)
    n = len(tr)
    spe = math.ceil(n / config.batch_size)
    total, warm = spe * config.epochs, int(config.warmup_epochs * spe)
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch + 1)
        perm = torch.randperm(n, generator=g)
        model.train()
        for step in range(spe):
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch * spe + step, total, warm, config.lr, config.schedule)
            idx = perm[step * config.batch_size : (step + 1) * config.batch_size]
            loss, _ = model.loss(tr.x[idx], tr.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
        model.eval()
        with torch.no_grad():
            sum(int((model(te.x[i : i + 512]).argmax(1) == te.y[i : i + 512]).sum()) for i in range(0, len(te), 512))
    return time.perf_counter() - t0


def loop_ratio(dataset: str, epochs: int, reps: int) -> dict:
    """Library loop / bare loop, alternated; the library's time is its own ``train_time_s`` (the epochs and their
    evaluation, from after the data and the model are ready, as the bare loop is timed). ``library_call_s`` is the
    whole ``train()`` call, data loading included."""
    config = TrainConfig(dataset=dataset, loss="gccs", epochs=epochs, device="cpu")
    train(config)  # warm-up: first data load, allocator, oneDNN kernels
    lib, call, bare, lib_cpu, bare_cpu = [], [], [], [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        result = train(config)
        call.append(time.perf_counter() - t0)
        lib_cpu.append(time.process_time() - c0)
        lib.append(result.metrics["train_time_s"])
        c0 = time.process_time()
        bare.append(bare_loop(config))
        bare_cpu.append(time.process_time() - c0)
    return {"dataset": dataset, "epochs": epochs, "library_s": statistics.median(lib), "bare_s": statistics.median(bare),
            "library_call_s": statistics.median(call), "ratio": statistics.median(lib) / statistics.median(bare),
            "library_runs_s": lib, "bare_runs_s": bare,
            # CPU time of the whole calls (each loads its data and builds its model): steadier on a loaded machine
            "library_cpu_s": statistics.median(lib_cpu), "bare_cpu_s": statistics.median(bare_cpu),
            "ratio_cpu": statistics.median(lib_cpu) / statistics.median(bare_cpu)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--loops-only", action="store_true", help="only the library-loop / bare-loop ratios")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "training.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    steps = [] if a.loops_only else [step_ratio("mnist5k", 128, 16, 20, a.reps), step_ratio("mnist5k", 256, 64, 10, a.reps),
                                     step_ratio("digits", 128, 16, 50, a.reps)]
    loops = [loop_ratio("digits", 5, a.reps), loop_ratio("mnist5k", 1, max(2, a.reps // 2))]
    print("| encoder / dataset | batch | d | GCCS step | CE step | GCCS / CE |")
    print("|---|---|---|---|---|---|")
    for r in steps:
        print(f"| {r['encoder']} / {r['dataset']} | {r['batch']} | {r['latent_dim']} | {r['gccs_ms']:.1f} ms | "
              f"{r['ce_ms']:.1f} ms | {r['ratio']:.3f} |")
    print()
    print("| run | library loop | bare PyTorch loop | library / bare (wall) | library / bare (CPU time, whole call) |")
    print("|---|---|---|---|---|")
    for r in loops:
        print(f"| {r['dataset']}, GCCS, {r['epochs']} epoch(s) | {r['library_s']:.2f} s | {r['bare_s']:.2f} s "
              f"| {r['ratio']:.3f} | {r['ratio_cpu']:.3f} |")
    out = Path(a.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": a.threads,
                               "torch": torch.__version__, "load_average_before": load_before,
                               "load_average_after": os.getloadavg(), "steps": steps, "loops": loops}, indent=2) + "\n")


if __name__ == "__main__":
    main()

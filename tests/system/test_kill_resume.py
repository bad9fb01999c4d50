"""Interrupted training: SIGKILL a command-line run again and again, then ``--resume`` finishes it.

The kills come at random points: during start-up, at a random moment inside an epoch, and just after a
checkpoint write has begun (the test watches the run folder and kills as soon as the temporary file of an
atomic write appears; whether the kill really landed mid-write is read back from the folder afterwards).
After every kill every ``.safetensors`` file in the folder must load cleanly and the saved epoch must
never go backwards; at the end the resumed run's weights *and optimizer state* must be bit-equal to an
uninterrupted run's (CPU, fixed seed), and the folder must hold no temporary file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from gccs_core import TrainConfig, load_model, train
from gccs_core.checkpoint import METADATA_FILE, MODEL_FILE, TRAINING_FILE, read_checkpoint_bytes

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 40
ARGS = dict(dataset="digits", loss="gccs", epochs=EPOCHS, limit_train=64, batch_size=32, seed=3, device="cpu")
KILL_PLAN = ("startup", "write", "random", "write", "random", "write")
"""One entry per kill: 6 kills, at least 3 of them aimed at a checkpoint write."""
FIGURES: dict[str, Any] = {}


def _cli(out: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "gccs_core", "train", "--out", str(out), "--quiet"]
    if resume:
        return cmd + ["--resume", "--device", "cpu"]
    return cmd + ["--dataset", ARGS["dataset"], "--loss", ARGS["loss"], "--epochs", str(EPOCHS), "--limit-train",
                  str(ARGS["limit_train"]), "--batch-size", str(ARGS["batch_size"]), "--seed", str(ARGS["seed"]),
                  "--device", "cpu"]


def _temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) if out.exists() else []


def _ckpt_id(out: Path) -> tuple[int, int] | None:
    try:
        st = (out / TRAINING_FILE).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _kill_when(proc: subprocess.Popen, out: Path, mode: str, rng: random.Random) -> dict[str, Any] | None:
    """SIGKILL ``proc`` at a point chosen by ``mode``; returns what happened, or None if it finished first."""
    start, stale = time.monotonic(), set(_temporaries(out))  # left by an earlier kill; the first save removes them
    if mode == "startup":  # during imports / data loading, before the first checkpoint of this process
        time.sleep(rng.uniform(0.2, 1.5))
    elif mode == "write":  # as soon as the temporary file of the n-th atomic write appears
        nth, seen = rng.randint(1, 6), set(stale)
        while proc.poll() is None:
            tmps = set(_temporaries(out)) - seen
            if tmps:
                seen |= tmps
                if len(seen - stale) >= nth:
                    break
            time.sleep(0.0002)
    else:  # "random": after 1-3 new epochs were saved, at a uniformly random moment of the next epoch
        n_epochs, last, stamps = rng.randint(1, 3), _ckpt_id(out), [time.monotonic()]
        while proc.poll() is None and len(stamps) <= n_epochs:
            now = _ckpt_id(out)
            if now != last:
                last = now
                stamps.append(time.monotonic())
            time.sleep(0.0005)
        epoch_s = (stamps[-1] - stamps[-2]) if len(stamps) > 2 else 0.05
        time.sleep(rng.uniform(0.0, epoch_s))
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return {"mode": mode, "after_s": round(time.monotonic() - start, 3), "temporaries": sorted(set(_temporaries(out)) - stale)}


def _check_folder(out: Path) -> int:
    """Every checkpoint in the folder loads cleanly; returns the epoch saved in the training checkpoint (0 if none)."""
    for path in sorted(out.glob("*.safetensors")):
        model = load_model(path)  # model files and training files (raises on any damage)
        assert torch.isfinite(model(torch.rand(4, 1, 8, 8))).all(), path
    if (out / METADATA_FILE).exists():
        json.loads((out / METADATA_FILE).read_text())
    leftovers = [n for n in _temporaries(out) if not n.startswith((f".{MODEL_FILE}.", f".{TRAINING_FILE}.",
                                                                    f".{METADATA_FILE}."))]
    assert not leftovers, leftovers
    ckpt = out / TRAINING_FILE
    return int(read_checkpoint_bytes(ckpt.read_bytes())[1]["epoch"]) if ckpt.exists() else 0


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint_bytes(path.read_bytes())[2]


def test_sigkill_at_random_points_then_resume_gives_bit_equal_weights(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    reference = tmp_path / "reference"
    ref = train(TrainConfig(**ARGS), out_dir=reference)  # uninterrupted, same library code path as the CLI

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rng = random.Random(int(os.environ.get("GCCS_KILL_SEED", "6")))
    kills: list[dict[str, Any]] = []
    saved_epoch, launches = 0, 0
    while True:
        resume = (out / TRAINING_FILE).exists()
        proc = subprocess.Popen(_cli(out, resume), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        launches += 1
        if len(kills) < len(KILL_PLAN):
            info = _kill_when(proc, out, KILL_PLAN[len(kills)], rng)
            if info is not None:
                epoch = _check_folder(out)
                assert epoch >= saved_epoch, f"saved epoch went back from {saved_epoch} to {epoch}"
                kills.append({**info, "epoch_saved": epoch, "resumed_from": saved_epoch if resume else None})
                saved_epoch = epoch
                continue
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        break
    assert len(kills) == len(KILL_PLAN), f"the run finished after only {len(kills)} kills: {kills}"
    during_write = [k for k in kills if k["temporaries"]]
    assert during_write, f"no kill landed during a checkpoint write: {kills}"

    # nothing half-written is left, and nothing was lost: bit-equal weights and optimizer state, full history
    assert sorted(p.name for p in out.iterdir()) == sorted([MODEL_FILE, TRAINING_FILE, METADATA_FILE])
    got, want = _tensors(out / TRAINING_FILE), _tensors(reference / TRAINING_FILE)
    assert got.keys() == want.keys() and any(k.startswith("optim/") for k in got)
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]
    model = load_model(out)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.model.state_dict().values()))
    meta = json.loads((out / METADATA_FILE).read_text())
    ref_meta = json.loads((reference / METADATA_FILE).read_text())
    assert [h["epoch"] for h in meta["history"]] == list(range(1, EPOCHS + 1))
    assert [h["test_accuracy"] for h in meta["history"]] == [h["test_accuracy"] for h in ref_meta["history"]]
    assert [h["train_loss"] for h in meta["history"]] == [h["train_loss"] for h in ref_meta["history"]]
    FIGURES.update(kills=len(kills), during_write=len(during_write), launches=launches, lost_epochs=0,
                   seconds=round(time.perf_counter() - t0, 1))
    print("\nkill/resume:", FIGURES)
    for k in kills:
        print("  ", k)

"""Glue for the Train page: settings -> ``gccs_core.TrainConfig``; ``gccs_core.train`` in a worker thread
(``TrainJob``) that the page polls; Stop (``gccs_core.train.StopRequest``: the run ends after the current
epoch, checkpoint kept) and Continue (``train(..., resume=True, epochs=N)``); the runs' saved histories
for the overlay. The worker never calls Streamlit: it fills the job, the page's fragment reads it."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app import figures, loaders, registry, state
from gccs_core.files import read_checkpoint_header
from gccs_core.views import sample_indices, snapshot_panel

LOSS_LABELS = {"gccs": "GCCS (Gaussian class-conditional simplex)", "ce": "cross-entropy", "mmc": "MMC (max-Mahalanobis)",
               "center": "center loss"}
DEFAULTS = {"tr_loss": "gccs", "tr_sigma": 1.0, "tr_radius": 10.0, "tr_latent_dim": 16, "tr_lam": 0.0, "tr_epochs": 5,
            "tr_lr": 3e-3, "tr_adv": False, "tr_adv_eps": 0.1, "tr_name": "", "tr_more": 3}
FORM_PARAMS = {"sigma": "tr_sigma", "radius": "tr_radius", "lam": "tr_lam"}
"""Loss hyperparameters the form offers -> their widget keys; a loss gets those of them it accepts."""
MAX_EPOCHS = 50


def init_state() -> None:
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if st.session_state.get("tr_dataset") not in registry.available_datasets():
        st.session_state["tr_dataset"] = st.session_state.get("dataset", "digits")
    st.session_state["training"] = False  # training runs in a worker thread: no page has to lock its controls


def config_from_state() -> dict[str, Any]:
    """The training request from the form; validated by ``TrainConfig`` (a ``ValueError`` names the bad value)."""
    from gccs_core.losses import loss_parameters
    from gccs_core.train import TrainConfig

    loss = st.session_state["tr_loss"]
    params = {str(p): float(st.session_state[FORM_PARAMS[p]]) for p in loss_parameters(loss) if p in FORM_PARAMS}
    cfg = {"dataset": st.session_state["tr_dataset"], "loss": loss,
           "loss_params": params, "latent_dim": int(st.session_state["tr_latent_dim"]),
           "epochs": int(st.session_state["tr_epochs"]), "lr": float(st.session_state["tr_lr"]),
           "adv_train": bool(st.session_state["tr_adv"]), "adv_eps": float(st.session_state["tr_adv_eps"]),
           "adv_steps": 5, "device": "cpu"}
    if state.FAST:
        cfg["limit_train"] = 300
    TrainConfig(**cfg)  # raises with a clear message
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", st.session_state["tr_name"].strip())[:40].strip("-.")
    stem = os.path.splitext(os.path.basename(cfg["dataset"]))[0]  # an uploaded NPZ's dataset name is its path
    return {"config": cfg, "name": name or f"{stem}-{loss}"}


def _unique_dir(name: str) -> Path:
    base = registry.session_models_dir()
    out, i = base / name, 2
    while out.exists():
        out, i = base / f"{name}-{i}", i + 1
    return out


@dataclass
class TrainJob:
    """One training run in a worker thread; the worker writes, the page reads (under ``lock``)."""

    out_dir: Path
    config: dict[str, Any]
    total_epochs: int
    resume: bool
    probe_x: Any  # (N, C, H, W) tensor of the probe samples, embedded after every epoch
    probe_y: np.ndarray
    class_names: list[str]
    snapshots: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)  # (epoch, z, pred)
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    step_text: str = "starting"
    fraction: float = 0.0
    status: str = "running"  # running | done | stopped | failed
    error: str = ""
    centers: np.ndarray | None = None
    is_prototype: bool = False
    num_classes: int = 10
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def epochs_done(self) -> int:
        return len(self.history)


def _work(job: TrainJob) -> None:
    """The worker: the library's training loop with callbacks that only record into ``job``."""
    from gccs_core.snapshots import LatentSnapshots
    from gccs_core.train import Callback, StopRequest, TrainConfig, TrainingDiverged, train

    class Record(Callback):
        def on_step(self, info: Any) -> None:
            total = info.steps_per_epoch * job.total_epochs
            with job.lock:
                job.steps.append(info.global_step + 1)
                job.loss.append(info.loss)
                job.acc.append(info.accuracy)
                job.fraction = min(1.0, (info.global_step + 1) / total)
                job.step_text = (f"epoch {info.epoch + 1}/{job.total_epochs} · step {info.global_step + 1}/{total} · "
                                 f"loss {info.loss:.3f} · batch accuracy {info.accuracy:.1%}")

        def on_epoch(self, info: Any, model: Any) -> None:
            snap = snaps.snapshots[-1]
            with job.lock:
                job.snapshots.append((snap.epoch, snap.z, snap.pred))
                job.history.append({"epoch": info.epoch + 1, "train_loss": info.train_loss,
                                    "train_accuracy": info.train_accuracy, "test_accuracy": info.test_accuracy})
                job.centers = None if model.centers is None else model.centers.detach().cpu().numpy()
                job.is_prototype, job.num_classes = bool(model.is_prototype), int(model.num_classes)

    snaps = LatentSnapshots(job.probe_x, every=1)
    try:
        cfg = TrainConfig(**job.config)
        result = train(cfg, [snaps, Record(), StopRequest(job.stop)], job.out_dir, resume=job.resume,
                       epochs=job.total_epochs if job.resume else None)  # Record after snaps: it reads the new snapshot
    except (ValueError, TrainingDiverged, FileExistsError, FileNotFoundError, RuntimeError, OSError) as err:
        with job.lock:
            job.status, job.error = "failed", f"Training failed: {err}"
    except Exception as err:  # noqa: BLE001 - a worker thread must always report back to the page
        with job.lock:
            job.status, job.error = "failed", f"Training failed unexpectedly ({type(err).__name__}): {err}"
    else:
        with job.lock:
            job.history = [dict(h) for h in result.history]
            job.status = "stopped" if len(result.history) < job.total_epochs else "done"
    finally:
        job.seconds = time.perf_counter() - job.started


def _start(job: TrainJob) -> TrainJob:
    job.thread = threading.Thread(target=_work, args=(job,), name=f"train-{job.out_dir.name}", daemon=True)
    st.session_state["train_job"] = job
    st.session_state.pop("train_result", None)
    job.thread.start()
    return job


def _probe(dataset: str) -> tuple[Any, np.ndarray, list[str]]:
    data = loaders.get_dataset(dataset)
    idx = sample_indices(data.y.numpy(), 60 if state.FAST else 200, seed=1)
    return data.x[idx], data.y.numpy()[idx], [str(c) for c in data.class_names]


def start_training(request: dict[str, Any]) -> TrainJob:
    """Start a new run of ``request`` (from ``config_from_state``) in a worker thread."""
    cfg = request["config"]
    x, y, names = _probe(cfg["dataset"])
    return _start(TrainJob(_unique_dir(request["name"]), cfg, int(cfg["epochs"]), False, x, y, names))


def continue_training(result: dict[str, Any], more: int) -> TrainJob:
    """Continue the finished or stopped run of ``result`` for ``more`` epochs from its checkpoint."""
    if not isinstance(more, int) or not 1 <= more <= MAX_EPOCHS:
        raise ValueError(f"more={more!r} epochs is invalid: continue for 1 to {MAX_EPOCHS} epochs.")
    cfg = {"device": "cpu"}  # the library takes everything else from the run's checkpoint
    x, y, names = _probe(result["dataset"])
    job = TrainJob(Path(result["out_dir"]), cfg, int(result["epochs"]) + more, True, x, y, names,
                   snapshots=list(result["snapshots"]), history=[])
    return _start(job)


def current_job() -> TrainJob | None:
    return st.session_state.get("train_job")


def live_figures(job: TrainJob) -> tuple[Any, Any, Any | None]:
    """Step curves (loss, batch accuracy) and the latent space of the epochs done so far (None before the first)."""
    with job.lock:
        steps, loss, acc, snaps = list(job.steps), list(job.loss), list(job.acc), list(job.snapshots)
    loss_fig = figures.line_figure(steps, {"loss": loss}, "training loss", "step", "loss", 250)
    acc_fig = figures.line_figure(steps, {"batch accuracy": acc}, "batch accuracy", "step", "accuracy", 250, [0, 1.02])
    return loss_fig, acc_fig, (epochs_figure(job, snaps) if snaps else None)


def live_summary(job: TrainJob) -> str:
    """The live curves in one line of text (their caption)."""
    with job.lock:
        if not job.loss:
            return "Live curves: no step done yet."
        return figures.summary_lines(f"Live curves after {len(job.loss)} steps", {
            "training loss": f"{job.loss[-1]:.3f}", "batch accuracy": f"{job.acc[-1]:.1%}",
            "epochs done": len(job.snapshots)})


def epochs_figure(job: TrainJob, snaps: list[tuple[int, np.ndarray, np.ndarray]]) -> Any:
    """The epochs animation of the probe samples (simplex view of the last epoch)."""
    z = np.stack([s[1] for s in snaps])
    pred = np.stack([s[2] for s in snaps])
    panel = snapshot_panel(z, pred, job.probe_y, job.centers, job.is_prototype, job.num_classes,
                           f"{job.out_dir.name}: latent space per epoch")
    return figures.animation_figure([panel], job.class_names, [f"epoch {s[0]}" for s in snaps], "label",
                                    state.plot_height(), trails=False, duration_ms=600), panel.kind


def finish(job: TrainJob) -> None:
    """The worker has ended: its result (or error) goes to ``st.session_state['train_result']``."""
    st.session_state.pop("train_job", None)
    if job.status == "failed":
        st.session_state["train_result"] = {"error": job.error}
        return
    registry.refresh()  # the new model is selectable at once
    fig, kind = epochs_figure(job, job.snapshots) if job.snapshots else (None, "")
    cfg = read_checkpoint_header(job.out_dir / "model.safetensors")[1]["config"]
    st.session_state["train_result"] = {
        "name": job.out_dir.name, "key": registry.user_model_key(job.out_dir), "out_dir": str(job.out_dir),
        "dataset": cfg["dataset"], "loss": cfg["loss"], "history": job.history, "epochs": job.epochs_done,
        "planned": job.total_epochs, "stopped": job.status == "stopped",
        "test_accuracy": job.history[-1]["test_accuracy"] if job.history else float("nan"),
        "seconds": job.seconds, "figure": fig, "panel": {"kind": kind}, "snapshots": job.snapshots}
    st.session_state["_overlay_fresh"] = True  # the overlay starts from this run


def overlay_default(runs: dict[str, list[dict[str, float]]], result: dict[str, Any] | None) -> list[str]:
    """The runs the overlay starts with: the new run and the first run of the other loss family (cross-entropy
    for a GCCS-like run, GCCS for the others); without a new run, the first GCCS and cross-entropy runs."""
    labels = list(runs)
    mine = ([k for k in labels if k.startswith(f"{result['name']}{registry.SOURCE_TAGS['user']} · ")][:1]
            if result else [])
    loss = (result or {}).get("loss", "")
    other = "ce" if loss != "ce" else "gccs"
    firsts = [next((k for k in labels if k.endswith(f" · {name}") and k not in mine), None)
              for name in ((other,) if mine else ("gccs", "ce"))]
    return mine + [k for k in firsts if k is not None]


def run_histories(entries: list[registry.ModelEntry]) -> dict[str, list[dict[str, float]]]:
    """The saved per-epoch history of each model (label -> records), from its checkpoint header; models
    without one (uploads, foreign files) are left out."""
    out = {}
    for e in entries:
        if not e.path:
            continue
        try:
            history = read_checkpoint_header(e.path)[1].get("history")
        except (OSError, ValueError):
            continue
        if isinstance(history, list) and history and all(isinstance(h, dict) and "epoch" in h for h in history):
            out[f"{e.label} · {e.loss}"] = history
    return out

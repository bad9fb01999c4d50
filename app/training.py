"""Glue for the Train page: settings -> ``gccs_core.TrainConfig``; ``gccs_core.train`` with a live
progress callback and ``gccs_core.snapshots.LatentSnapshots``; the epochs animation from the snapshots."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import streamlit as st

from app import figures, loaders, registry, state
from gccs_core.views import sample_indices, snapshot_panel

LOSS_LABELS = {"gccs": "GCCS (Gaussian class-conditional simplex)", "ce": "cross-entropy", "mmc": "MMC (max-Mahalanobis)",
               "center": "center loss"}
DEFAULTS = {"tr_loss": "gccs", "tr_sigma": 1.0, "tr_radius": 10.0, "tr_latent_dim": 16, "tr_lam": 0.0, "tr_epochs": 5,
            "tr_lr": 3e-3, "tr_adv": False, "tr_adv_eps": 0.1, "tr_name": ""}
FORM_PARAMS = {"sigma": "tr_sigma", "radius": "tr_radius", "lam": "tr_lam"}
"""Loss hyperparameters the form offers -> their widget keys; a loss gets those of them it accepts."""


def init_state() -> None:
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if st.session_state.get("tr_dataset") not in registry.available_datasets():
        st.session_state["tr_dataset"] = st.session_state.get("dataset", "digits")
    if st.session_state.get("training") and "train_request" not in st.session_state:
        st.session_state["training"] = False  # a run that was interrupted (page left, tab reloaded)


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
        cfg["epochs"] = min(cfg["epochs"], 2)
    TrainConfig(**cfg)  # raises with a clear message
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", st.session_state["tr_name"].strip())[:40].strip("-.")
    stem = os.path.splitext(os.path.basename(cfg["dataset"]))[0]  # an uploaded NPZ's dataset name is its path
    return {"config": cfg, "name": name or f"{stem}-{loss}"}


def _unique_dir(name: str) -> Any:
    base = registry.session_models_dir()
    out, i = base / name, 2
    while out.exists():
        out, i = base / f"{name}-{i}", i + 1
    return out


def run_training(request: dict[str, Any] | None) -> None:
    """Train now, drawing progress live; the result goes to ``st.session_state['train_result']``."""
    from gccs_core.snapshots import LatentSnapshots
    from gccs_core.train import Callback, TrainConfig, TrainingDiverged, train

    if request is None:
        st.session_state["training"] = False
        return
    cfg = TrainConfig(**request["config"])
    out_dir = _unique_dir(request["name"])
    data = loaders.get_dataset(cfg.dataset)
    probe_idx = sample_indices(data.y.numpy(), 60 if state.FAST else 200, seed=1)
    probe_y = data.y.numpy()[probe_idx]
    snaps = LatentSnapshots(data.x[probe_idx], every=1)
    status = st.status(f"Training {cfg.loss} on {cfg.dataset} for {cfg.epochs} epochs…", expanded=True)
    bar = status.progress(0.0, text="starting")
    chart = status.empty()

    class LiveProgress(Callback):
        """Streams progress into the page (UI only: the loop itself is the library's)."""

        def __init__(self) -> None:
            self.steps: list[int] = []
            self.loss: list[float] = []
            self.acc: list[float] = []

        def on_step(self, info: Any) -> None:
            total = info.steps_per_epoch * cfg.epochs
            self.steps.append(info.global_step + 1)
            self.loss.append(info.loss)
            self.acc.append(info.accuracy)
            bar.progress(min(1.0, (info.global_step + 1) / total),
                         text=f"epoch {info.epoch + 1}/{cfg.epochs} · step {info.global_step + 1}/{total} · "
                              f"loss {info.loss:.3f} · batch accuracy {info.accuracy:.1%}")
            if info.step % 4 == 0 or info.step == info.steps_per_epoch - 1:
                self.draw()

        def draw(self) -> None:
            n = len(self.steps)  # unique keys: a redraw never collides with an earlier element of this run
            c1, c2 = chart.container().columns(2)
            c1.plotly_chart(figures.line_figure(self.steps, {"loss": self.loss}, "training loss", "step", "loss", 250),
                            key=f"live_loss_{n}")
            c2.plotly_chart(figures.line_figure(self.steps, {"batch accuracy": self.acc}, "batch accuracy", "step",
                                                "accuracy", 250, [0, 1.02]), key=f"live_acc_{n}")

    t0 = time.perf_counter()
    try:
        result = train(cfg, [LiveProgress(), snaps], out_dir)
    except (ValueError, TrainingDiverged, FileExistsError, FileNotFoundError, RuntimeError) as err:
        status.update(label="Training failed", state="error")
        st.session_state["train_result"] = {"error": f"Training failed: {err}"}
        return
    finally:
        st.session_state["training"] = False
    status.update(label=f"Done: {cfg.epochs} epochs in {time.perf_counter() - t0:.1f} s", state="complete", expanded=False)

    z_all, pred_all = snaps.stacked()
    model = result.model
    centers = None if model.centers is None else model.centers.detach().cpu().numpy()
    panel = snapshot_panel(z_all, pred_all, probe_y, centers, model.is_prototype, model.num_classes,
                           f"{out_dir.name}: latent space per epoch")
    fig = figures.animation_figure([panel], [str(c) for c in data.class_names], [f"epoch {e}" for e in snaps.epochs],
                                   "label", state.plot_height(), trails=False, duration_ms=600)
    registry.refresh()  # the new model is selectable at once
    st.session_state["train_result"] = {
        "name": out_dir.name, "key": registry.user_model_key(out_dir), "dataset": cfg.dataset, "loss": cfg.loss,
        "history": result.history, "test_accuracy": result.metrics["test_accuracy"], "epochs": len(result.history),
        "seconds": time.perf_counter() - t0, "figure": fig, "panel": {"kind": panel.kind}}
    st.rerun()  # unlock the controls and show the result

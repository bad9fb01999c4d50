"""Glue for the Train page: settings -> ``gccs_core.TrainConfig``; ``gccs_core.train`` with a live
progress callback and ``gccs_core.snapshots.LatentSnapshots``; the epochs animation from the snapshots."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import streamlit as st

from app import common, figures

LOSS_LABELS = {"gccs": "GCCS (Gaussian class-conditional simplex)", "ce": "cross-entropy", "mmc": "MMC (max-Mahalanobis)",
               "center": "center loss"}
DEFAULTS = {"tr_loss": "gccs", "tr_sigma": 1.0, "tr_radius": 10.0, "tr_latent_dim": 16, "tr_lam": 0.0, "tr_epochs": 5,
            "tr_lr": 3e-3, "tr_adv": False, "tr_adv_eps": 0.1, "tr_name": ""}
PARAMS_OF = {"gccs": ("sigma", "radius", "lam"), "mmc": ("sigma", "radius"), "center": ("lam",), "ce": ()}


def init_state() -> None:
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if st.session_state.get("tr_dataset") not in common.available_datasets():
        st.session_state["tr_dataset"] = st.session_state.get("dataset", "digits")
    if st.session_state.get("training") and "train_request" not in st.session_state:
        st.session_state["training"] = False  # a run that was interrupted (page left, tab reloaded)


def config_from_state() -> dict[str, Any]:
    """The training request from the form; validated by ``TrainConfig`` (a ``ValueError`` names the bad value)."""
    from gccs_core import TrainConfig

    loss = st.session_state["tr_loss"]
    values = {"sigma": float(st.session_state["tr_sigma"]), "radius": float(st.session_state["tr_radius"]),
              "lam": float(st.session_state["tr_lam"])}
    if loss == "center" and values["lam"] == 0.0:
        values["lam"] = 0.01
    cfg = {"dataset": st.session_state["tr_dataset"], "loss": loss,
           "loss_params": {k: values[k] for k in PARAMS_OF[loss]}, "latent_dim": int(st.session_state["tr_latent_dim"]),
           "epochs": int(st.session_state["tr_epochs"]), "lr": float(st.session_state["tr_lr"]),
           "adv_train": bool(st.session_state["tr_adv"]), "adv_eps": float(st.session_state["tr_adv_eps"]),
           "adv_steps": 5, "device": "cpu"}
    if common.FAST:
        cfg["limit_train"] = 300
        cfg["epochs"] = min(cfg["epochs"], 2)
    TrainConfig(**cfg)  # raises with a clear message
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", st.session_state["tr_name"].strip())[:40].strip("-.")
    return {"config": cfg, "name": name or f"{cfg['dataset']}-{loss}"}


def _unique_dir(name: str) -> Any:
    base = common.session_models_dir()
    out, i = base / name, 2
    while out.exists():
        out, i = base / f"{name}-{i}", i + 1
    return out


def run_training(request: dict[str, Any] | None) -> None:
    """Train now, drawing progress live; the result goes to ``st.session_state['train_result']``."""
    from gccs_core import TrainConfig, TrainingDiverged, train
    from gccs_core.projection import LatentProjection, choose_prototypes, sample_indices
    from gccs_core.snapshots import LatentSnapshots
    from gccs_core.train import Callback

    if request is None:
        st.session_state["training"] = False
        return
    cfg = TrainConfig(**request["config"])
    out_dir = _unique_dir(request["name"])
    data = common.get_dataset(cfg.dataset)
    probe_idx = sample_indices(data.y.numpy(), 60 if common.FAST else 200, seed=1)
    import torch

    probe_x = data.x[torch.from_numpy(probe_idx)]
    probe_y = data.y.numpy()[probe_idx]
    snaps = LatentSnapshots(probe_x, every=1)
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
    protos, kind = choose_prototypes(centers, model.is_prototype, z_all[-1], probe_y, model.num_classes)
    proj = LatentProjection("simplex", prototypes=protos[np.isfinite(protos).all(1)]).fit(z_all[-1], probe_y)
    panel = {"title": f"{out_dir.name}: latent space per epoch", "frames": proj.transform(z_all), "pred": pred_all,
             "y": probe_y, "protos": proj.transform(np.nan_to_num(protos)), "kind": kind}
    fig = figures.animation_figure([panel], [str(c) for c in data.class_names], [f"epoch {e}" for e in snaps.epochs],
                                   "label", common.plot_height(), trails=False, duration_ms=600)
    common._scan_models.clear()  # the new model is selectable at once
    st.session_state["train_result"] = {
        "name": out_dir.name, "key": f"user:{out_dir.parent.name}/{out_dir.name}", "dataset": cfg.dataset, "loss": cfg.loss,
        "history": result.history, "test_accuracy": result.metrics["test_accuracy"], "epochs": len(result.history),
        "seconds": time.perf_counter() - t0, "figure": fig, "panel": {"kind": kind}}
    st.rerun()  # unlock the controls and show the result

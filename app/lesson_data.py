"""Glue for the Lesson page: pick the model and samples, call ``gccs_core.lesson`` (cached), build the panels.

No maths here: the attacks, the zero-gradient mask, the decision plane and the weak/strong readings all come
from ``gccs_core.lesson``; panels from ``gccs_core.views``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from app import loaders, registry, state
from app.registry import ModelEntry
from gccs_core.lesson import DEFAULT_CLASS, DEFAULT_EPS, DEFAULT_N, DEFAULT_RESULTS, DEFAULT_STEPS, Lesson
from gccs_core.views import Panel, decision_attack_panel, with_decision_plane

EPS_GRID = (0.05, 0.1, 0.2, 0.3)
"""The eps of the shipped reports and of the study: the live sweep uses the same ones."""


def lesson_models() -> list[ModelEntry]:
    """Models the lesson can run on: the GCCS ones (any reading), digits first (the fastest on a laptop)."""
    models = [m for m in registry.list_models() if m.loss.startswith("gccs") and m.path]
    return sorted(models, key=lambda m: (m.dataset != "digits", m.source != "pretrained", m.name))


def default_model(models: list[ModelEntry]) -> str | None:
    """``digits-gccs`` when shipped, else the first GCCS model."""
    return next((m.key for m in models if m.name == "digits-gccs"), models[0].key if models else None)


def samples(entry: ModelEntry, cls: int, n: int) -> np.ndarray:
    """The first ``n`` samples of class ``cls`` in the model's latent view (the same samples every page plots)."""
    view = loaders.get_view(entry, "simplex")
    idx = view.idx[view.y == cls][:n]
    if len(idx) == 0:
        raise ValueError(f"class {cls} has no sample in this model's view; pick another class.")
    return np.asarray(idx, dtype=np.int64)


@st.cache_data(max_entries=8, show_spinner=False)
def _lesson(key: str, mtime: float, idx: tuple[int, ...], cls: int, eps: float, steps: int) -> Lesson:
    from gccs_core.lesson import run_lesson

    entry = loaders._entry(key)
    view = loaders.get_view(entry, "simplex")
    data = loaders.get_dataset(entry.dataset)
    index = np.asarray(idx, dtype=np.int64)
    return run_lesson(loaders.get_model(entry), data.x[index], data.y[index], eps=eps, steps=steps, plane_y=cls,
                      background_z=view.z, background_y=view.y)


def lesson(entry: ModelEntry, cls: int, eps: float, steps: int, n: int) -> tuple[Lesson, np.ndarray]:
    """The lesson's two attacks on ``n`` samples of class ``cls`` (cached on the model file and every setting)."""
    idx = samples(entry, cls, n)
    return _lesson(entry.key, registry.mtime(entry.path), tuple(int(i) for i in idx), cls, float(eps), int(steps)), idx


@st.cache_data(max_entries=8, show_spinner=False)
def _sweep(key: str, mtime: float, idx: tuple[int, ...], steps: int, eps_grid: tuple[float, ...]) -> dict[str, Any]:
    from gccs_core.lesson import live_sweep

    entry = loaders._entry(key)
    data = loaders.get_dataset(entry.dataset)
    index = np.asarray(idx, dtype=np.int64)
    return live_sweep(loaders.get_model(entry), data.x[index], data.y[index], eps_grid, steps).to_dict()


@st.cache_data(max_entries=8, show_spinner=False)
def _readings(name: str, path: str, mtime: float, reports_dir: str, sigma: float | None) -> tuple[list[dict], list[str]]:
    from gccs_core.checkpoint import load_metadata
    from gccs_core.files import file_sha256
    from gccs_core.lesson import protocol_readings

    meta = load_metadata(path)
    cfg = meta.get("config", {})
    readings, notes = protocol_readings(name, dataset=str(meta.get("dataset", cfg.get("dataset", ""))),
                                        loss=str(cfg.get("loss", meta.get("spec", {}).get("loss", ""))), sigma=sigma,
                                        adv_train=bool(cfg.get("adv_train", False)), sha256=file_sha256(path),
                                        reports_dir=reports_dir, results=DEFAULT_RESULTS)
    return [r.to_dict() for r in readings], notes


def readings(entry: ModelEntry, les: Lesson, idx: np.ndarray) -> tuple[list[dict[str, Any]], list[str]]:
    """Weak/strong readings: the lesson's samples (live), the shipped report, the study's rows; notes on what is missing."""
    grid = EPS_GRID[:2] if state.FAST else EPS_GRID
    live = _sweep(entry.key, registry.mtime(entry.path), tuple(int(i) for i in idx), les.steps, grid)
    shipped, notes = _readings(entry.name, str(entry.path), registry.mtime(entry.path),
                               str(registry.pretrained_dir() / "robustness"), les.sigma)
    return [live, *shipped], notes


def panels(entry: ModelEntry, les: Lesson, which: tuple[str, ...], clean: bool = False) -> list[Panel]:
    """Decision-plane panels of the lesson's attacks (``weak``/``strong``); ``clean``: frame 0 only."""
    plane_view = with_decision_plane(loaders.get_view(entry, "simplex"), les.plane)
    out = []
    for name in which:
        att = les.weak if name == "weak" else les.strong
        end = 1 if clean else len(att.pred)
        title = (f"{entry.label}: {len(les.y)} samples, clean" if clean
                 else f"{att.label}: {int(att.correct.sum())}/{len(les.y)} still correct")
        out.append(decision_attack_panel(plane_view, les.plane, att.z[:end], att.pred[:end], les.y, title=title,
                                         x=att.x[:end], perturbation=att.linf[:end], label=att.label, key=name))
    return out


DEFAULTS = {"ls_class": DEFAULT_CLASS, "ls_eps": DEFAULT_EPS, "ls_steps": DEFAULT_STEPS}
N_SAMPLES = 12 if state.FAST else DEFAULT_N

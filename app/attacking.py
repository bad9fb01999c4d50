"""Glue for the Attack page: read the settings, call ``gccs_core.attacks.run_attack`` (cached) and
``gccs_core.evaluate.evaluate_robustness``, project with the library, and hand arrays to the figures."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import streamlit as st

from app import figures, loaders, registry, state
from app.registry import ModelEntry
from gccs_core.views import (
    DECISION_METHOD,
    LatentView,
    attack_panel,
    decision_attack_panel,
    fit_method,
    fooled,
    perturbation_norms,
    preview_panel,
)

ATTACK_CHOICES = {"pgd": "PGD", "fgsm": "FGSM", "mim": "MIM (momentum)", "bim": "BIM", "pgd-targeted": "Targeted PGD",
                  "cw": "Carlini-Wagner (L2, minimal; slow)"}
OBJECTIVE_LABELS = {"ce": "cross-entropy", "margin": "margin", "dlr": "DLR", "latent": "latent (models with centres)"}
DEFAULTS = {"attack": "pgd", "eps": 0.15, "steps": 20, "objective": "ce", "samples": "random", "n_samples": 50,
            "sample_class": 3, "target": 8}


def init_state(num_classes: int) -> None:
    """Default attack settings (URL values, already in session state, win)."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if state.FAST:
        st.session_state["n_samples"] = min(int(st.session_state["n_samples"]), 12)
    for key in ("target", "sample_class"):
        if not 0 <= int(st.session_state[key]) < num_classes:
            st.session_state[key] = 0
    if st.session_state["attack"] not in ATTACK_CHOICES:
        st.session_state["attack"] = "pgd"
    if st.session_state["objective"] not in OBJECTIVE_LABELS:
        st.session_state["objective"] = "ce"
    if st.session_state["samples"] not in ("random", "one class", "picked"):
        st.session_state["samples"] = "random"


def choose_samples(view: LatentView) -> np.ndarray:
    """Dataset indices to attack: random, one class, or the points picked on the Latent space page."""
    pool, y = view.idx, view.y
    n = int(st.session_state["n_samples"])
    mode = st.session_state["samples"]
    if mode == "one class":
        chosen = pool[y == int(st.session_state["sample_class"])][:n]
    elif mode == "picked":
        picked = set(st.session_state.get("picked", []))
        chosen = np.array([i for i in pool if i in picked][:n], dtype=np.int64)
        if len(chosen) == 0:
            raise ValueError("no points picked yet: click or box-select points on the Latent space page first.")
    else:
        chosen = np.sort(np.random.default_rng(0).choice(pool, size=min(n, len(pool)), replace=False))
    if len(chosen) == 0:
        raise ValueError("no samples match this choice.")
    return np.asarray(chosen, dtype=np.int64)


@st.cache_data(max_entries=12, show_spinner=False)
def _attack(key: str, mtime: float, dataset: str, idx: tuple[int, ...], attack: str, eps: float, steps: int,
            objective: str, target: int | None) -> dict[str, np.ndarray]:
    """Run one recorded attack on one model (numpy out, cached on the model key and every setting)."""
    from gccs_core.attacks import run_attack

    model = loaders.get_model(_entry(key))
    data = loaders.get_dataset(dataset)
    index = np.asarray(idx, dtype=np.int64)
    res = run_attack(model, data.x[index], data.y[index], attack=attack, eps=eps, steps=steps, objective=objective,
                     target=target, record=True, seed=0)
    traj = res.trajectory
    return {"z": traj.z.numpy(), "pred": traj.pred.numpy(), "x": traj.x.permute(0, 1, 3, 4, 2).numpy().astype(np.float16),
            "linf": perturbation_norms(traj.x.numpy(), "linf")}


def _entry(key: str) -> ModelEntry:
    entry = registry.find_model(key)
    if entry is None:
        raise ValueError(f"model {key!r} is no longer available; pick another one in the sidebar.")
    return entry


def run(entries: list[ModelEntry], pool_view: LatentView, method: str) -> dict[str, Any]:
    """Attack the chosen samples on every model and build the animation; everything the page draws."""
    t0 = time.perf_counter()
    idx = choose_samples(pool_view)
    y = pool_view.y[pool_view.positions(idx)]
    names = pool_view.class_names
    choice = st.session_state["attack"]
    attack = "pgd" if choice == "pgd-targeted" else choice
    target = int(st.session_state["target"]) if choice == "pgd-targeted" else None
    eps, steps, objective = float(st.session_state["eps"]), int(st.session_state["steps"]), st.session_state["objective"]
    panels, flips = [], {}
    for entry in entries:
        with st.spinner(f"Attacking {entry.label}…"):
            traj = _attack(entry.key, registry.mtime(entry.path), entry.dataset, tuple(int(i) for i in idx), attack, eps,
                           steps, objective, target)
        label = f"{entry.label} · {entry.loss}"
        title, x = label + ": {fooled}/{n} fooled", traj["x"].astype(np.float32)
        if method == DECISION_METHOD:
            plane_view, plane = loaders.get_plane(entry, *plane_pair(target))
            panel = decision_attack_panel(plane_view, plane, traj["z"], traj["pred"], y, title=title, x=x,
                                          perturbation=traj["linf"], target=target, label=label, key=entry.key)
        else:
            panel = attack_panel(loaders.get_view(entry, fit_method(method)), loaders.get_projection(entry, method), method,
                                 traj["z"], traj["pred"], y, title=title, target=target, x=x, label=label, key=entry.key)
        flips[label] = fooled(panel.pred, y, target).sum(1).tolist()
        panels.append(panel)
    n_frames = panels[0].n_frames
    fig = figures.animation_figure(panels, names, [f"step {t}" for t in range(n_frames)], "pred", state.plot_height())
    what = ATTACK_CHOICES[choice] + (f" → {names[target]}" if target is not None else "")
    summary = (f"{what}, eps={eps:g}, {steps} steps, objective {OBJECTIVE_LABELS[objective]}, {len(idx)} samples; "
               "points are coloured by the current prediction; a thick black ring = misclassified.")
    if method == DECISION_METHOD:
        py, pt = plane_pair(target)
        summary += (f" Decision plane of {names[py]} vs {names[pt]}: x is each point's latent distance to that boundary "
                    "(dashed line); hover a point for it and its input perturbation norm at this step.")
    seconds = time.perf_counter() - t0
    loaders.log.info("GCCS attack ready in %.3f s (%d samples, %d models, %d frames)", seconds, len(idx), len(panels),
                     n_frames)
    return {"figure": fig, "panels": panels, "seconds": seconds,
            "flips": flips, "idx": idx, "y": y, "eps": eps, "n_frames": n_frames,
            "summary": summary, "method": method, "keys": [e.key for e in entries], "objective": objective,
            "attack": attack, "steps": steps}


def plane_pair(target: int | None) -> tuple[int, int]:
    """Classes of the decision plane: the sidebar's pair, with the attack's target as t when it has one."""
    y, t = state.plane_pair()
    return y, (t if target is None else target)


def preview(entries: list[ModelEntry], pool_view: LatentView, method: str) -> Any | None:
    """The chosen samples, clean, on both models (one frame), from the views' stored coordinates.

    Drawn before any attack so the page already holds its chart: the attack's animation then replaces
    it in place instead of mounting plotly from scratch. None when a view lacks ``method``.
    """
    try:
        idx = choose_samples(pool_view)
    except ValueError:
        return None
    panels = []
    target = int(st.session_state["target"]) if st.session_state.get("attack") == "pgd-targeted" else None
    for entry in entries:
        try:
            view = loaders.view_for(entry, fit_method(method), pair=plane_pair(target))
        except ValueError:  # e.g. a decision plane of one class with itself: the attack explains it when run
            return None
        if not view.has(method):
            return None
        panels.append(preview_panel(view, method, idx, f"{entry.label} · {entry.loss}: {len(idx)} samples before the attack"))
    return figures.animation_figure(panels, pool_view.class_names, ["clean"], "pred", state.plot_height())


@st.cache_data(max_entries=8, show_spinner=False)
def _robust_curve(key: str, mtime: float, dataset: str, idx: tuple[int, ...], label: str, steps: int,
                  eps_list: tuple[float, ...]) -> tuple[list[float], list[float]]:
    from gccs_core.evaluate import evaluate_robustness

    model = loaders.get_model(_entry(key))
    data = loaders.get_dataset(dataset)
    index = np.asarray(idx, dtype=np.int64)
    report = evaluate_robustness(model, data.x[index], data.y[index], list(eps_list), steps=steps, attacks=[label],
                                 min_l2=None, seed=0)
    return [float(r["eps"]) for r in report.results], report.worst_case()


def suite_label(attack: str, objective: str, steps: int) -> str:
    """The evaluation suite's label for this attack and objective (its nearest entry: PGD with the objective)."""
    from gccs_core.evaluate import OPTIONAL_ATTACKS, default_suite

    labels = {(s.attack, s.objective): s.label for s in default_suite(steps, latent=True)}
    labels.update({pair: label for label, pair in OPTIONAL_ATTACKS.items()})
    for pair in ((attack, objective), (attack, "ce"), ("pgd", objective)):
        if pair in labels:
            return labels[pair]
    raise ValueError(f"objective={objective!r} has no robust-accuracy evaluation.")


def robust_curve(entries: list[ModelEntry], out: dict[str, Any]) -> dict[str, Any]:
    """Robust accuracy against eps on the attacked samples, from the library's evaluation (untargeted).

    A latent-objective curve is drawn only for models with class centres.
    """
    label = suite_label(out["attack"], out["objective"], out["steps"])
    top = max(0.3, 2 * out["eps"])
    eps_list = tuple(float(round(v, 3)) for v in np.linspace(0.0, top, 4 if state.FAST else 7))
    series, eps = {}, list(eps_list)
    for entry in entries:
        if out["objective"] == "latent" and loaders.get_model(entry).centers is None:
            continue
        with st.spinner(f"Robust accuracy of {entry.label}…"):
            eps, acc = _robust_curve(entry.key, registry.mtime(entry.path), entry.dataset,
                                     tuple(int(i) for i in out["idx"]), label, out["steps"], eps_list)
        series[f"{entry.label} · {entry.loss}"] = acc
    return {"eps": eps, "series": series, "title": f"robust accuracy vs eps ({label}, {len(out['idx'])} samples)"}

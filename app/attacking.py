"""Glue for the Attack page: read the settings, call ``gccs_core.attacks.run_attack`` (cached),
``gccs_core.transfer.transfer_attack`` (craft on one panel's model, replay on the other's) and
``gccs_core.evaluate.evaluate_robustness``, project with the library, and hand arrays to the figures."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import streamlit as st

from app import figures, loaders, registry, state
from app.registry import ModelEntry
from gccs_core.transfer import step_bars
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
DEFAULTS = {"attack": "pgd", "steps": 20, "objective": "ce", "samples": "random", "n_samples": 50,
            "sample_class": 3, "target": 8, "norm": "linf", "transfer": "none"}
NORM_LABELS = {"linf": "L∞", "l2": "L2"}
EPS_RANGE = {"linf": {"min": 0.0, "max": 0.5, "step": 0.01, "default": 0.15, "unit": "pixels in [0, 1]"},
             "l2": {"min": 0.0, "max": 5.0, "step": 0.05, "default": 1.0, "unit": "Euclidean norm of the image change"}}
"""The eps slider per threat model: L-inf radii are per pixel, L2 radii the length of the whole perturbation."""
NORM_ATTACKS = {"linf": tuple(ATTACK_CHOICES), "l2": tuple(ATTACK_CHOICES)}
"""Attacks offered per norm. Every native attack (FGSM, PGD, BIM, MIM) takes ``norm='l2'`` (an L2 step and an
L2-ball projection in ``gccs_core.attacks.native``); Carlini-Wagner is an L2 minimal-perturbation attack under
either choice. tests/app/test_attack_page.py runs each of them in L2."""
CURVE_EPS = {"linf": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5), "l2": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)}
"""Radii of the robust-accuracy curve per threat model: a fixed grid over the eps slider's range, so the curve
is computed once per (model, samples, norm, attack, steps) and moving the eps slider reuses it (the run's own eps
is marked on the chart). GCCS_APP_FAST uses every other radius."""
TRANSFER_CHOICES = {"none": "white-box: each model attacked with its own gradients",
                    "left": "craft on the left model, replay on the right",
                    "right": "craft on the right model, replay on the left"}


def init_state(num_classes: int) -> None:
    """Default attack settings (URL values, already in session state, win)."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if st.session_state["norm"] not in NORM_LABELS:
        st.session_state["norm"] = "linf"
    rng = EPS_RANGE[st.session_state["norm"]]
    st.session_state.setdefault("eps", rng["default"])
    try:
        eps = float(st.session_state["eps"])
    except (TypeError, ValueError):
        eps = rng["default"]
    st.session_state["eps"] = eps if rng["min"] <= eps <= rng["max"] else rng["default"]
    if st.session_state["transfer"] not in TRANSFER_CHOICES:
        st.session_state["transfer"] = "none"
    if state.FAST:
        st.session_state["n_samples"] = min(int(st.session_state["n_samples"]), 12)
    for key in ("target", "sample_class"):
        if not 0 <= int(st.session_state[key]) < num_classes:
            st.session_state[key] = 0
    if st.session_state["attack"] not in NORM_ATTACKS[st.session_state["norm"]]:
        st.session_state["attack"] = "pgd"
    if st.session_state["objective"] not in OBJECTIVE_LABELS:
        st.session_state["objective"] = "ce"
    if st.session_state["samples"] not in ("random", "one class", "picked"):
        st.session_state["samples"] = "random"


def norm_changed() -> None:
    """Norm radio callback: the eps slider's range switches, so eps moves to that norm's default radius."""
    st.session_state["eps"] = EPS_RANGE[st.session_state["norm"]]["default"]
    if st.session_state.get("attack") not in NORM_ATTACKS[st.session_state["norm"]]:
        st.session_state["attack"] = "pgd"


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
            objective: str, target: int | None, norm: str = "linf") -> dict[str, np.ndarray]:
    """Run one recorded attack on one model (numpy out, cached on the model key and every setting)."""
    from gccs_core.attacks import run_attack

    model = loaders.get_model(_entry(key))
    data = loaders.get_dataset(dataset)
    index = np.asarray(idx, dtype=np.int64)
    res = run_attack(model, data.x[index], data.y[index], attack=attack, eps=eps, steps=steps, norm=norm,
                     objective=objective, target=target, record=True, seed=0)
    traj = res.trajectory
    return {"z": traj.z.numpy(), "pred": traj.pred.numpy(), "scores": traj.scores.numpy(),
            "x": traj.x.permute(0, 1, 3, 4, 2).numpy().astype(np.float16),
            "perturbation": perturbation_norms(traj.x.numpy(), norm)}


@st.cache_data(max_entries=6, show_spinner=False)
def _transfer(source: str, source_mtime: float, other: str, other_mtime: float, dataset: str, idx: tuple[int, ...],
              attack: str, eps: float, steps: int, objective: str, target: int | None,
              norm: str) -> dict[str, dict[str, Any]]:
    """Craft on ``source`` and replay on ``other`` (``gccs_core.transfer``): both models' arrays, by model key."""
    from gccs_core.transfer import transfer_attack

    data = loaders.get_dataset(dataset)
    index = np.asarray(idx, dtype=np.int64)
    res = transfer_attack(loaders.get_model(_entry(source)), loaders.get_model(_entry(other)), data.x[index],
                          data.y[index], target=target, attack=attack, eps=eps, steps=steps, norm=norm,
                          objective=objective, seed=0)
    x = res.x.transpose(0, 1, 3, 4, 2).astype(np.float16)
    common = {"x": x, "perturbation": res.perturbation}
    return {"source": {**common, "z": res.source.z, "pred": res.source.pred, "scores": res.source.scores,
                       "rate": res.source_rate},
            "other": {**common, "z": res.replayed.z, "pred": res.replayed.pred, "scores": res.replayed.scores,
                      "rate": res.transfer_rate}}


def _entry(key: str) -> ModelEntry:
    entry = registry.find_model(key)
    if entry is None:
        raise ValueError(f"model {key!r} is no longer available; pick another one in the sidebar.")
    return entry


def _trajectories(entries: list[ModelEntry], idx: np.ndarray, attack: str, eps: float, steps: int, objective: str,
                  target: int | None, norm: str, transfer: str) -> tuple[list[dict[str, Any]], list[str], str]:
    """Per model: its attack arrays, how they were made ('white-box', 'crafted here', 'replayed from ...'),
    and a one-line transfer summary ('' for white-box runs)."""
    samples = tuple(int(i) for i in idx)
    if transfer == "none" or len(entries) < 2:
        trajs = []
        for entry in entries:
            with st.spinner(f"Attacking {entry.label}…"):
                trajs.append(_attack(entry.key, registry.mtime(entry.path), entry.dataset, samples, attack, eps, steps,
                                     objective, target, norm))
        return trajs, ["white-box"] * len(entries), ""
    src, dst = (0, 1) if transfer == "left" else (1, 0)
    a, b = entries[src], entries[dst]
    with st.spinner(f"Crafting on {a.label}, replaying on {b.label}…"):
        res = _transfer(a.key, registry.mtime(a.path), b.key, registry.mtime(b.path), a.dataset, samples, attack, eps,
                        steps, objective, target, norm)
    trajs, hows = [None, None], [None, None]
    trajs[src], trajs[dst] = res["source"], res["other"]
    hows[src], hows[dst] = "crafted here", f"replayed from {a.label}"
    note = (f"Transfer: the attack fools {res['source']['rate']:.0%} of the samples on {a.label} · {a.loss}, where it "
            f"was crafted; the same adversarial inputs fool {res['other']['rate']:.0%} on {b.label} · {b.loss}.")
    return trajs, hows, note


def run(entries: list[ModelEntry], pool_view: LatentView, method: str) -> dict[str, Any]:
    """Attack the chosen samples on every model (or craft on one, replay on the other) and build the animation."""
    t0 = time.perf_counter()
    idx = choose_samples(pool_view)
    y = pool_view.y[pool_view.positions(idx)]
    names = pool_view.class_names
    choice = st.session_state["attack"]
    attack = "pgd" if choice == "pgd-targeted" else choice
    target = int(st.session_state["target"]) if choice == "pgd-targeted" else None
    eps, steps, objective = float(st.session_state["eps"]), int(st.session_state["steps"]), st.session_state["objective"]
    norm, transfer = st.session_state["norm"], st.session_state["transfer"]
    trajs, hows, transfer_note = _trajectories(entries, idx, attack, eps, steps, objective, target, norm, transfer)
    panels, flips, readouts = [], {}, []
    for entry, traj, how in zip(entries, trajs, hows):
        label = f"{entry.label} · {entry.loss}"
        title = label + ("" if how == "white-box" else f" ({how})") + ": {fooled}/{n} fooled"
        x = traj["x"].astype(np.float32)
        if method == DECISION_METHOD:
            plane_view, plane = loaders.get_plane(entry, *plane_pair(target))
            panel = decision_attack_panel(plane_view, plane, traj["z"], traj["pred"], y, title=title, x=x, norm=norm,
                                          perturbation=traj["perturbation"], target=target, label=label, key=entry.key)
        else:
            panel = attack_panel(loaders.get_view(entry, fit_method(method)), loaders.get_projection(entry, method), method,
                                 traj["z"], traj["pred"], y, title=title, target=target, x=x, label=label, key=entry.key)
        flips[label] = fooled(panel.pred, y, target).sum(1).tolist()
        panels.append(panel)
        view = loaders.get_view(entry, "simplex")
        readouts.append({"label": label, "how": how, "z": traj["z"], "scores": traj["scores"],
                         "prototypes": view.prototypes, "kind": view.prototype_kind,
                         "nearest_vertex": view.prototype_kind == "simplex vertices"})
    n_frames = panels[0].n_frames
    fig = figures.animation_figure(panels, names, [f"step {t}" for t in range(n_frames)], "pred", state.plot_height())
    what = ATTACK_CHOICES[choice] + (f" → {names[target]}" if target is not None else "")
    summary = (f"{what}, eps={eps:g}, {steps} steps, {NORM_LABELS[norm]} ball, objective {OBJECTIVE_LABELS[objective]}, "
               f"{len(idx)} samples; points are coloured by the current prediction; a thick black ring = misclassified.")
    if method == DECISION_METHOD:
        py, pt = plane_pair(target)
        summary += (f" Decision plane of {names[py]} vs {names[pt]}: x is each point's latent distance to that boundary "
                    f"(dashed line); hover a point for it and its input perturbation ({NORM_LABELS[norm]}) at this step.")
    seconds = time.perf_counter() - t0
    loaders.log.info("GCCS attack ready in %.3f s (%d samples, %d models, %d frames)", seconds, len(idx), len(panels),
                     n_frames)
    return {"figure": fig, "panels": panels, "seconds": seconds,
            "flips": flips, "idx": idx, "y": y, "eps": eps, "n_frames": n_frames,
            "summary": summary, "method": method, "keys": [e.key for e in entries], "objective": objective,
            "attack": attack, "steps": steps, "norm": norm, "transfer": transfer, "transfer_note": transfer_note,
            "readouts": readouts, "target": target}


def step_readouts(out: dict[str, Any], step: int, pos: int) -> list[dict[str, Any]]:
    """Per panel: sample ``pos`` at ``step`` as bars (``gccs_core.transfer.step_bars``) with its panel's label."""
    bars = []
    for r in out["readouts"]:
        nearest = r["nearest_vertex"] and np.isfinite(r["prototypes"]).all()
        b = step_bars(r["z"][step, pos], r["scores"][step, pos], r["prototypes"] if nearest else None, nearest)
        bars.append({**b, "label": r["label"], "how": r["how"], "kind_name": r["kind"]})
    return bars


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
                  eps_list: tuple[float, ...], norm: str = "linf") -> tuple[list[float], list[float]]:
    from gccs_core.evaluate import evaluate_robustness

    model = loaders.get_model(_entry(key))
    data = loaders.get_dataset(dataset)
    index = np.asarray(idx, dtype=np.int64)
    report = evaluate_robustness(model, data.x[index], data.y[index], list(eps_list), norm=norm, steps=steps,
                                 attacks=[label], min_l2=None, seed=0)
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


def curve_eps(norm: str) -> tuple[float, ...]:
    """The radii of the robust-accuracy curve for ``norm`` (every other one in fast mode)."""
    grid = CURVE_EPS[norm]
    return grid[::2] if state.FAST else grid


def robust_curve(entries: list[ModelEntry], out: dict[str, Any]) -> dict[str, Any]:
    """Robust accuracy against eps on the attacked samples, from the library's evaluation (untargeted).

    The radii do not depend on the run's eps (``CURVE_EPS``): a new eps on the same samples is a cache hit.
    A latent-objective curve is drawn only for models with class centres.
    """
    label = suite_label(out["attack"], out["objective"], out["steps"])
    norm = out.get("norm", "linf")
    eps_list = curve_eps(norm)
    series, eps = {}, list(eps_list)
    for entry in entries:
        if out["objective"] == "latent" and loaders.get_model(entry).centers is None:
            continue
        with st.spinner(f"Robust accuracy of {entry.label}…"):
            eps, acc = _robust_curve(entry.key, registry.mtime(entry.path), entry.dataset,
                                     tuple(int(i) for i in out["idx"]), label, out["steps"], eps_list, norm)
        series[f"{entry.label} · {entry.loss}"] = acc
    return {"eps": eps, "series": series,
            "title": f"white-box robust accuracy vs {NORM_LABELS[norm]} eps ({label}, {len(out['idx'])} samples)"}

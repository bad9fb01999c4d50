"""Attack page: the same samples attacked on both models (or crafted on one, replayed on the other), animated in
latent space, in an L-inf or L2 ball; per step, the images and each model's class scores or vertex distances."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import attacking, charts, exports, figures, loaders, registry, state
from gccs_core.views import adversarial_images, panels_table, table_npz

dataset, method = st.session_state["dataset"], st.session_state["method"]
loaders.wake_warm_up()  # torch, the models and the data load while the user reads the page, not after the click
st.title("Attack")
entries = [registry.find_model(st.session_state.get(side) or "") for side in ("left", "right")]
entries = [e for e in entries if e is not None]
if not entries:
    st.warning(f"No model for {dataset} yet: train one on the Train page or upload one.")
    st.stop()
try:
    pool_view = loaders.get_view(entries[0], "simplex")
except (ValueError, RuntimeError, OSError) as err:
    state.show_error(err, "Cannot load the samples")
    st.stop()
names = [str(c) for c in pool_view["class_names"]]
attacking.init_state(len(names))
busy = state.busy()

norm = st.session_state["norm"]
rng = attacking.EPS_RANGE[norm]
with state.controls("Attack settings"):
    st.radio("Threat model", list(attacking.NORM_LABELS), key="norm", horizontal=True, disabled=busy,
             format_func=lambda k: f"{attacking.NORM_LABELS[k]} ball", on_change=attacking.norm_changed,
             help="L∞ bounds every pixel's change by eps; L2 bounds the length of the whole change (eps up to 5).")
    with st.form("attack_form", border=False):
        c1, c2, c3 = st.columns(3)
        c1.selectbox("Attack", list(attacking.NORM_ATTACKS[norm]), key="attack", format_func=attacking.ATTACK_CHOICES.get)
        c1.selectbox("Target class (targeted PGD)", list(range(len(names))), key="target", format_func=lambda k: names[k])
        c2.slider(f"eps ({attacking.NORM_LABELS[norm]}, {rng['unit']})", rng["min"], rng["max"], key="eps",
                  step=rng["step"])
        c2.number_input("Steps", 1, 100, key="steps")
        c2.selectbox("Objective", list(attacking.OBJECTIVE_LABELS), key="objective", format_func=attacking.OBJECTIVE_LABELS.get)
        c3.radio("Samples", ["random", "one class", "picked"], key="samples", horizontal=True,
                 help="'picked': the points you clicked or box-selected on the Latent space page.")
        c3.selectbox("Class (for 'one class')", list(range(len(names))), key="sample_class", format_func=lambda k: names[k])
        c3.slider("How many", 1, 200, key="n_samples")
        if len(entries) == 2:
            c3.selectbox("Transfer", list(attacking.TRANSFER_CHOICES), key="transfer",
                         format_func=attacking.TRANSFER_CHOICES.get,
                         help="Craft the attack on one panel's model and feed the very same inputs to the other: "
                              "a model that resists its own gradients but not the replay is masking them.")
        run = st.form_submit_button("Run attack", type="primary", key="run_attack", disabled=busy)

if run or st.session_state.pop("autorun_attack", False):
    try:
        st.session_state["attack_out"] = attacking.run(entries, pool_view, method)
    except (ValueError, RuntimeError, OSError, ImportError) as err:
        st.session_state.pop("attack_out", None)
        state.show_error(err, "The attack could not run")

out = st.session_state.get("attack_out")
if out is None:
    st.info("Choose the settings and press **Run attack**; the samples then move through latent space, for both models.")
    fig = attacking.preview(entries, pool_view, method)
    if fig is not None:
        st.plotly_chart(fig, key="attack_anim", width="stretch", theme=None, config={"displaylogo": False})
    st.stop()
if out["method"] != method or out["keys"] != [e.key for e in entries]:
    st.caption("Settings in the sidebar changed since this run; press Run attack to refresh.")

st.caption(out["summary"] + f" Computed in {out['seconds']:.2f} s.")
if out.get("transfer_note"):
    st.info(out["transfer_note"], icon=":material/swap_horiz:")
st.plotly_chart(out["figure"], key="attack_anim", width="stretch", theme=None, config={"displaylogo": False})
exports.download_row("dl_attack", out["figure"], lambda: panels_table(out["panels"], out["idx"]),
                     f"attack-{out['attack']}-eps{out['eps']:g}-{out['method']}")
if out["method"] == "umap":
    st.caption("UMAP positions of attacked points are approximate (placed among the clean points they resemble).")

# -- below the animation: one tab at a time --------------------------------------------------------
# Lazy tabs: only the open tab's content runs and is drawn, so a click on Run attack sends the browser the
# animation and one small tab, not four charts at once (the other charts made the animation paint later).
TABS = ("Step by step", "Flips per step", "Robust accuracy vs eps")
tab_step, tab_flips, tab_robust = st.tabs(TABS, key="attack_tab", on_change="rerun")
n_steps = out["n_frames"] - 1
stem = f"attack-{out['attack']}-eps{out['eps']:g}"


def _amplitude(panel, pos: int) -> float:  # type: ignore[no-untyped-def]
    """L-inf: the eps ball spans black to white; L2: the largest pixel change of this sample over the run does."""
    x0 = panel.x[0, pos]
    return out["eps"] if out.get("norm", "linf") == "linf" else float(abs(panel.x[:, pos] - x0).max())


def _sample_png(step: int, pos: int) -> bytes:
    """The chosen sample at the chosen step, one row per model: original | perturbation (amplified) | adversarial."""
    rows = []
    for panel in out["panels"]:
        x0, xt = panel.x[0, pos], panel.x[step, pos]
        parts = [figures.upscale(x0, 112), figures.perturbation_image(xt - x0, _amplitude(panel, pos), 112),
                 figures.upscale(xt, 112)]
        rows.append(np.hstack(parts))
    return exports.png_bytes(np.vstack(rows))


if tab_step.open:
    with tab_step:
        c_step, c_sample = st.columns([2, 1])
        step = c_step.slider("Step", 0, n_steps, n_steps, key="img_step")
        pos = c_sample.selectbox("Sample", list(range(len(out["y"]))), key="img_sample",
                                 format_func=lambda i: f"#{out['idx'][i]} (label {names[out['y'][i]]})")
        for panel in out["panels"]:
            cols = st.columns([1.3, 1, 1, 1, 1.3])
            cols[0].markdown(f"**{panel.label}**")
            x0, xt = panel.x[0, pos], panel.x[step, pos]
            cols[1].image(figures.upscale(x0, 112), caption="original")
            cols[2].image(figures.perturbation_image(xt - x0, _amplitude(panel, pos), 112),
                          caption="perturbation (amplified)")
            cols[3].image(figures.upscale(xt, 112), caption="adversarial")
            p = int(panel.pred[step, pos])
            verdict = "✅ correct" if p == out["y"][pos] else "❌ fooled"
            cols[4].markdown(f"step {step}: predicted **{names[p]}** {verdict}")
        c_npz, c_png, _ = st.columns([1.4, 1.4, 3])
        with c_npz:
            exports.file_button("dl_adv_npz", "Adversarial images (NPZ)",
                                lambda: table_npz(adversarial_images(out["panels"], out["idx"])), f"{stem}-images.npz",
                                "application/octet-stream", "Every sample's clean and final adversarial image per "
                                "model, with labels and predictions (np.load; no pickle).")
        with c_png:
            exports.file_button("dl_adv_png", "This sample (PNG)", lambda: _sample_png(step, pos),
                                f"{stem}-sample{out['idx'][pos]}-step{step}.png", "image/png",
                                "Original, amplified perturbation and adversarial image of the chosen sample at "
                                "the chosen step, one row per model.")
        try:
            bars = attacking.step_readouts(out, step, pos)
        except (ValueError, KeyError) as err:
            state.show_error(err, "Per-step bars unavailable")
        else:
            bars_fig = charts.step_bars_figure(bars, names, int(out["y"][pos]), step)
            st.plotly_chart(bars_fig, key="step_bars", width="stretch", theme=None, config={"displaylogo": False})
            exports.html_button("dl_bars", bars_fig, f"{stem}-bars-step{step}")

if tab_flips.open:
    with tab_flips:
        flips_fig = figures.line_figure(list(range(out["n_frames"])), out["flips"], "flipped samples per step", "step",
                                        "samples flipped")
        st.plotly_chart(flips_fig, key="flips", width="stretch")
        exports.html_button("dl_flips", flips_fig, f"{stem}-flips")

if tab_robust.open:
    with tab_robust:
        try:
            curve = attacking.robust_curve(entries, out)
            curve_fig = charts.robust_curve_figure(curve["eps"], curve["series"], curve["title"], out["eps"])
            st.plotly_chart(curve_fig, key="robust", width="stretch")
            exports.html_button("dl_robust", curve_fig, f"{stem}-robust-curve")
        except (ValueError, RuntimeError) as err:
            state.show_error(err, "Robust accuracy curve unavailable")

"""Attack page: the same samples attacked on both models, animated in latent space."""

from __future__ import annotations

import streamlit as st

from app import attacking, exports, figures, loaders, registry, state
from gccs_core.views import panels_table

dataset, method = st.session_state["dataset"], st.session_state["method"]
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

with state.controls("Attack settings"), st.form("attack_form", border=False):
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Attack", list(attacking.ATTACK_CHOICES), key="attack", format_func=attacking.ATTACK_CHOICES.get)
    c1.selectbox("Target class (targeted PGD)", list(range(len(names))), key="target", format_func=lambda k: names[k])
    c2.slider("eps (L∞, pixels in [0, 1])", 0.0, 0.5, key="eps", step=0.01)
    c2.number_input("Steps", 1, 100, key="steps")
    c2.selectbox("Objective", list(attacking.OBJECTIVE_LABELS), key="objective", format_func=attacking.OBJECTIVE_LABELS.get)
    c3.radio("Samples", ["random", "one class", "picked"], key="samples", horizontal=True,
             help="'picked': the points you clicked or box-selected on the Latent space page.")
    c3.selectbox("Class (for 'one class')", list(range(len(names))), key="sample_class", format_func=lambda k: names[k])
    c3.slider("How many", 1, 200, key="n_samples")
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
        st.plotly_chart(fig, key="attack_anim", width="stretch", config={"displaylogo": False})
    st.stop()
if out["method"] != method or out["keys"] != [e.key for e in entries]:
    st.caption("Settings in the sidebar changed since this run; press Run attack to refresh.")

st.caption(out["summary"] + f" Computed in {out['seconds']:.2f} s.")
st.plotly_chart(out["figure"], key="attack_anim", width="stretch", config={"displaylogo": False})
exports.download_row("dl_attack", out["figure"], lambda: panels_table(out["panels"], out["idx"]),
                     f"attack-{out['attack']}-eps{out['eps']:g}-{out['method']}")
if out["method"] == "umap":
    st.caption("UMAP positions of attacked points are approximate (placed among the clean points they resemble).")

# -- per step: images and predictions --------------------------------------------------------------
n_steps = out["n_frames"] - 1
c_step, c_sample = st.columns([2, 1])
step = c_step.slider("Step", 0, n_steps, n_steps, key="img_step")
pos = c_sample.selectbox("Sample", list(range(len(out["y"]))), key="img_sample",
                         format_func=lambda i: f"#{out['idx'][i]} (label {names[out['y'][i]]})")
for panel in out["panels"]:
    cols = st.columns([1.3, 1, 1, 1, 1.3])
    cols[0].markdown(f"**{panel.label}**")
    x0, xt = panel.x[0, pos], panel.x[step, pos]
    cols[1].image(figures.upscale(x0, 112), caption="original")
    cols[2].image(figures.perturbation_image(xt - x0, out["eps"], 112), caption="perturbation (amplified)")
    cols[3].image(figures.upscale(xt, 112), caption="adversarial")
    p = int(panel.pred[step, pos])
    verdict = "✅ correct" if p == out["y"][pos] else "❌ fooled"
    cols[4].markdown(f"step {step}: predicted **{names[p]}** {verdict}")

c_flip, c_rob = st.columns(2)
with c_flip:
    st.plotly_chart(figures.line_figure(list(range(out["n_frames"])), out["flips"], "flipped samples per step",
                                        "step", "samples flipped"), key="flips", width="stretch")
with c_rob:
    try:
        curve = attacking.robust_curve(entries, out)
        st.plotly_chart(figures.line_figure(curve["eps"], curve["series"], curve["title"], "eps", "robust accuracy",
                                            y_range=[0, 1.02]), key="robust", width="stretch")
    except (ValueError, RuntimeError) as err:
        state.show_error(err, "Robust accuracy curve unavailable")

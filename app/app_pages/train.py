"""Train page: train a model in the background (live progress, Stop), continue it, overlay runs' curves."""

from __future__ import annotations

import streamlit as st

from app import figures, registry, state, training

st.title("Train")
training.init_state()
job = training.current_job()
if job is not None and not job.running:
    training.finish(job)
    st.rerun()  # the sidebar was drawn before: redraw it with the new model in the pickers
busy = job is not None

with state.controls("Training settings"), st.form("train_form", border=False):
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Dataset", registry.available_datasets(), key="tr_dataset", disabled=busy)
    c1.selectbox("Loss", list(training.LOSS_LABELS), key="tr_loss", format_func=training.LOSS_LABELS.get, disabled=busy)
    c1.text_input("Model name", key="tr_name", disabled=busy, help="Saved under the user models folder.")
    c2.number_input("σ (class Gaussian std)", 0.05, 10.0, key="tr_sigma", step=0.1, disabled=busy)
    c2.number_input("r (vertex norm)", 0.5, 50.0, key="tr_radius", step=0.5, disabled=busy)
    c2.number_input("Latent dimension d", 2, 256, key="tr_latent_dim", disabled=busy)
    c2.number_input("λ (GCCS pull / center-loss weight)", 0.0, 10.0, key="tr_lam", step=0.01, disabled=busy)
    c3.number_input("Epochs", 1, training.MAX_EPOCHS, key="tr_epochs", disabled=busy)
    c3.number_input("Learning rate", 1e-5, 1.0, key="tr_lr", format="%.4f", step=1e-3, disabled=busy)
    c3.toggle("Adversarial training (PGD)", key="tr_adv", disabled=busy)
    c3.slider("Adversarial eps", 0.0, 0.5, key="tr_adv_eps", step=0.01, disabled=busy)
    start = st.form_submit_button("Train", type="primary", key="train_start", disabled=busy)

autorun = st.session_state.pop("autorun_train", False)  # a Learn preset; ignored while a run is going on
if not busy and (start or autorun):
    try:
        job = training.start_training(training.config_from_state())
    except ValueError as err:
        state.show_error(err, "Invalid settings")
    else:
        st.rerun()  # redraw with the form locked while the worker trains


@st.fragment(run_every=1.0)
def live() -> None:
    """Progress of the worker, read once a second; the page reruns when it ends."""
    figures.use_theme(st.context.theme.type)  # a fragment's rerun runs in a thread of its own
    job = training.current_job()
    if job is None or not job.running:
        st.rerun()
        return
    what = "Continuing" if job.resume else "Training"
    st.markdown(f"**{what} {job.out_dir.name}** for {job.total_epochs} epochs in total")
    st.progress(job.fraction, text=job.step_text)
    if job.stop.is_set():
        st.info("Stopping after the current epoch; its checkpoint is kept and the run can be continued.")
    else:
        st.button("Stop after this epoch", key="train_stop", icon=":material/stop_circle:", on_click=job.stop.set)
    loss_fig, acc_fig, latent = training.live_figures(job)
    c1, c2 = st.columns(2)
    c1.plotly_chart((loss_fig), key="live_loss")
    c2.plotly_chart((acc_fig), key="live_acc")
    st.caption(training.live_summary(job))
    if latent is not None:
        fig, kind = latent
        st.plotly_chart(fig, key="live_latent", theme=None)
        st.caption(f"The probe samples after each epoch done so far ({len(job.snapshots)}), coloured by their true "
                   f"class; stars: the {kind}. Press Play.")


if busy:
    live()
    st.stop()

result = st.session_state.get("train_result")
if result is None:
    st.info("Pick a loss and press **Train**. A few epochs on digits take seconds; the model is saved and appears "
            "in the model pickers at once. You can stop a run after any epoch and continue it later.")
elif result.get("error"):
    st.error(result["error"])
else:
    how = (f"stopped after {result['epochs']} of {result['planned']} epochs" if result["stopped"]
           else f"after {result['epochs']} epochs")
    st.success(f"Saved **{result['name']}** ({result['loss']} on {result['dataset']}): test accuracy "
               f"{result['test_accuracy']:.1%} {how} in {result['seconds']:.1f} s.")
    b1, b2, b3 = st.columns([2, 1, 2], vertical_alignment="bottom")
    if b1.button("Show it in the right panel", key="train_use"):
        state.set_pending(dataset=result["dataset"], right=result["key"])
        st.switch_page(st.session_state["_pages"]["latent"])
    b2.number_input("More epochs", 1, training.MAX_EPOCHS, key="tr_more")
    if b3.button(f"Continue {result['name']} from its checkpoint", key="train_continue", icon=":material/play_arrow:"):
        training.continue_training(result, int(st.session_state["tr_more"]))
        st.rerun()
    c1, c2 = st.columns(2)
    hist = result["history"]
    ep = [h["epoch"] for h in hist]
    c1.plotly_chart((figures.line_figure(ep, {"train loss": [h["train_loss"] for h in hist]}, "loss",
                                                       "epoch", "loss")), key="train_loss_chart", width="stretch")
    c2.plotly_chart((figures.line_figure(ep, {"train": [h["train_accuracy"] for h in hist],
                                                            "test": [h["test_accuracy"] for h in hist]}, "accuracy",
                                                       "epoch", "accuracy", y_range=[0, 1.02])),
                    key="train_acc_chart", width="stretch")
    st.caption(figures.summary_lines("Per epoch", {
        "final train loss": f"{hist[-1]['train_loss']:.3f}", "final test accuracy": f"{hist[-1]['test_accuracy']:.1%}",
        "best test accuracy": f"{max(h['test_accuracy'] for h in hist):.1%}"}))
    if result["figure"] is not None:
        st.subheader("The latent space over the epochs")
        st.caption("Probe samples coloured by their true class; the stars are the " + result["panel"]["kind"] +
                   " of the final model (simplex view). Press Play.")
        st.plotly_chart(result["figure"], key="train_anim", width="stretch", theme=None)

# -- overlay of several runs ------------------------------------------------------------------------------
st.subheader("Compare runs")
runs = training.run_histories(registry.list_models(st.session_state["tr_dataset"]))
if not runs:
    st.caption("No saved run with a history for this dataset yet.")
    st.stop()
fresh = result is not None and not result.get("error") and st.session_state.pop("_overlay_fresh", False)
if fresh or "tr_overlay" not in st.session_state:  # a new run: overlay it with a model of the other loss family
    st.session_state["tr_overlay"] = training.overlay_default(runs, result if fresh else None)
st.session_state["tr_overlay"] = [k for k in st.session_state["tr_overlay"] if k in runs]
picked = st.multiselect("Runs to overlay", list(runs), key="tr_overlay",
                        help="Pretrained models and the runs you trained here, from the history saved in each checkpoint.")
if picked:
    fig_acc, fig_loss = figures.overlay_figures({k: runs[k] for k in picked})
    o1, o2 = st.columns(2)
    o1.plotly_chart((fig_acc), key="overlay_acc", width="stretch")
    o2.plotly_chart((fig_loss), key="overlay_loss", width="stretch")
    st.caption(figures.summary_lines("Final test accuracy", {k: f"{runs[k][-1].get('test_accuracy', float('nan')):.1%} "
                                                                f"after {runs[k][-1]['epoch']} epochs" for k in picked}))

"""Train page: train a model live (progress, curves), then watch its classes move onto their vertices."""

from __future__ import annotations

import streamlit as st

from app import figures, registry, state, training

st.title("Train")
training.init_state()
busy = state.busy()

with state.controls("Training settings"), st.form("train_form", border=False):
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Dataset", registry.available_datasets(), key="tr_dataset", disabled=busy)
    c1.selectbox("Loss", list(training.LOSS_LABELS), key="tr_loss", format_func=training.LOSS_LABELS.get, disabled=busy)
    c1.text_input("Model name", key="tr_name", disabled=busy, help="Saved under the user models folder.")
    c2.number_input("σ (class Gaussian std)", 0.05, 10.0, key="tr_sigma", step=0.1, disabled=busy)
    c2.number_input("r (vertex norm)", 0.5, 50.0, key="tr_radius", step=0.5, disabled=busy)
    c2.number_input("Latent dimension d", 2, 256, key="tr_latent_dim", disabled=busy)
    c2.number_input("λ (GCCS pull / center-loss weight)", 0.0, 10.0, key="tr_lam", step=0.01, disabled=busy)
    c3.number_input("Epochs", 1, 50, key="tr_epochs", disabled=busy)
    c3.number_input("Learning rate", 1e-5, 1.0, key="tr_lr", format="%.4f", step=1e-3, disabled=busy)
    c3.toggle("Adversarial training (PGD)", key="tr_adv", disabled=busy)
    c3.slider("Adversarial eps", 0.0, 0.5, key="tr_adv_eps", step=0.01, disabled=busy)
    start = st.form_submit_button("Train", type="primary", key="train_start", disabled=busy)

if start or st.session_state.pop("autorun_train", False):
    try:
        st.session_state["train_request"] = training.config_from_state()
    except ValueError as err:
        state.show_error(err, "Invalid settings")
    else:
        st.session_state["training"] = True
        st.rerun()  # redraw with every control locked, then train

if busy:
    training.run_training(st.session_state.pop("train_request", None))

result = st.session_state.get("train_result")
if result is None:
    st.info("Pick a loss and press **Train**. A few epochs on digits take seconds; the model is saved and appears "
            "in the model pickers at once.")
    st.stop()
if result.get("error"):
    st.error(result["error"])
    st.stop()
st.success(f"Saved **{result['name']}** ({result['loss']} on {result['dataset']}): test accuracy "
           f"{result['test_accuracy']:.1%} after {result['epochs']} epochs in {result['seconds']:.1f} s.")
if st.button("Show it in the right panel", key="train_use"):
    state.set_pending(dataset=result["dataset"], right=result["key"])
    st.switch_page(st.session_state["_pages"]["latent"])
c1, c2 = st.columns(2)
hist = result["history"]
ep = [h["epoch"] for h in hist]
c1.plotly_chart(figures.line_figure(ep, {"train loss": [h["train_loss"] for h in hist]}, "loss", "epoch", "loss"),
                key="train_loss_chart", width="stretch")
c2.plotly_chart(figures.line_figure(ep, {"train": [h["train_accuracy"] for h in hist],
                                         "test": [h["test_accuracy"] for h in hist]}, "accuracy", "epoch", "accuracy",
                                    y_range=[0, 1.02]), key="train_acc_chart", width="stretch")
st.subheader("The latent space over the epochs")
st.caption("Probe samples coloured by their true class; the stars are the " + result["panel"]["kind"] +
           " of the final model (simplex view). Press Play.")
st.plotly_chart(result["figure"], key="train_anim", width="stretch")

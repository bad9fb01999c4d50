"""Compare page: robustness of the models at hand, from the library's evaluation reports."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import comparing, figures, registry, state

dataset = st.session_state["dataset"]
st.title("Compare")
st.caption("Worst-case robust accuracy: a sample counts as robust at eps only if every attack of the suite failed on it "
           "(FGSM, PGD with cross-entropy / margin / DLR / latent objectives, APGD, Square…). Reports of the pretrained "
           "models ship with them; other models can be evaluated here on a small subset.")
models = registry.list_models(dataset)
if not models:
    st.warning(f"No model for {dataset} yet.")
    st.stop()

reports, missing = comparing.reports_for(models)
if reports:
    table = comparing.table(reports)
    st.dataframe(pd.DataFrame(table["rows"]), hide_index=True, width="stretch")
    st.plotly_chart(figures.line_figure(table["eps"], table["curves"], f"worst-case robust accuracy on {dataset} (L∞)",
                                        "eps", "robust accuracy", 420, [0, 1.02]), key="compare_curves", width="stretch")
    pick = st.selectbox("Details of", list(reports), key="compare_detail", format_func=lambda k: reports[k]["label"])
    rep = reports[pick]["report"]
    st.dataframe(pd.DataFrame(rep.results), hide_index=True, width="stretch")
    for flag in rep.flags:
        st.warning(f"[{flag['code']}] {flag['message']}")
    st.caption(f"n = {rep.n} test samples, seed {rep.seed}, {rep.elapsed_s:.0f} s of evaluation.")
else:
    st.info("No robustness report for these models yet.")

if missing:
    st.subheader("Evaluate more models")
    key = st.selectbox("Model", [m.key for m in missing], key="eval_model",
                       format_func=lambda k: next(m.label for m in missing if m.key == k))
    st.caption("A quick evaluation: FGSM and PGD (cross-entropy, margin, DLR), 10 steps, on "
               f"{comparing.quick_n()} test samples.")
    if st.button("Evaluate", key="eval_run", disabled=state.busy()):
        try:
            with st.spinner("Evaluating…"):
                comparing.evaluate(next(m for m in missing if m.key == key))
        except (ValueError, RuntimeError, OSError) as err:
            state.show_error(err, "Evaluation failed")
        else:
            st.rerun()

"""Compare page: robustness of the models at hand (the library's reports, L-inf or L2), then the study's readings
under the weak or the strong protocol with their confidence intervals."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import charts, comparing, exports, figures, registry, state
from gccs_core import study_table

dataset = st.session_state["dataset"]
st.title("Compare")
if st.session_state.get("norm") not in comparing.NORM_LABELS:
    st.session_state["norm"] = "linf"
if st.session_state.get("protocol") not in study_table.PROTOCOLS:
    st.session_state["protocol"] = "strong"
with state.controls("Compare settings"):
    c_norm, c_proto = st.columns(2)
    c_norm.radio("Threat model", list(comparing.NORM_LABELS), key="norm", horizontal=True,
                 format_func=lambda k: f"{comparing.NORM_LABELS[k]} ball",
                 help="L∞: every pixel moves by at most eps; L2: the whole change has length at most eps.")
    c_proto.radio("Study protocol", list(study_table.PROTOCOLS), key="protocol", horizontal=True,
                  help=f"weak: {comparing.PROTOCOL_HELP['weak']}; strong: {comparing.PROTOCOL_HELP['strong']}.")
norm, protocol = st.session_state["norm"], st.session_state["protocol"]
label = comparing.NORM_LABELS[norm]
st.caption("Worst-case robust accuracy: a sample counts as robust at eps only if every attack of the suite failed on it "
           "(FGSM, PGD with cross-entropy / margin / DLR / latent objectives, APGD, Square…). Reports of the pretrained "
           "models ship with them (L∞ and, for mnist5k, L2); other models can be evaluated here on a small subset.")
models = registry.list_models(dataset)
if not models:
    st.warning(f"No model for {dataset} yet.")
    st.stop()

reports, missing = comparing.reports_for(models, norm)
if reports:
    table = comparing.table(reports)
    st.dataframe(pd.DataFrame(table["rows"]), hide_index=True, width="stretch")
    curves_fig = figures.line_figure(table["eps"], table["curves"], f"worst-case robust accuracy on {dataset} ({label})",
                                     f"eps ({label})", "robust accuracy", 420, [0, 1.02])
    st.plotly_chart(curves_fig, key="compare_curves", width="stretch")
    exports.html_button("dl_compare", curves_fig, f"robustness-{dataset}-{norm}")
    pick = st.selectbox("Per-attack table of", list(reports), key="compare_detail",
                        format_func=lambda k: reports[k]["label"])
    rep = reports[pick]["report"]
    st.dataframe(pd.DataFrame(rep.results), hide_index=True, width="stretch")
    for flag in rep.flags:
        st.warning(f"[{flag['code']}] {flag['message']}")
    st.caption(f"n = {rep.n} test samples, seed {rep.seed}, {rep.elapsed_s:.0f} s of evaluation, {rep.norm}.")
    exports.file_button("dl_report", "Report (JSON)", lambda: json.dumps(rep.to_dict(), indent=1),
                        f"{reports[pick]['label']}-robustness-{norm}.json", "application/json",
                        "This model's robustness report, in the library's format (gccs_core.report.load_report reads it).")
else:
    st.info(f"No {label} robustness report for these models yet.")

if missing:
    st.subheader(f"Evaluate more models ({label})")
    key = st.selectbox("Model", [m.key for m in missing], key="eval_model",
                       format_func=lambda k: next(m.label for m in missing if m.key == k))
    st.caption(f"A quick {label} evaluation: FGSM and PGD (cross-entropy, margin, DLR), 10 steps, on "
               f"{comparing.quick_n()} test samples, eps {', '.join(f'{e:g}' for e in comparing.quick_eps(norm))}.")
    if st.button("Evaluate", key="eval_run", disabled=state.busy()):
        try:
            with st.spinner("Evaluating…"):
                comparing.evaluate(next(m for m in missing if m.key == key), norm)
        except (ValueError, RuntimeError, OSError) as err:
            state.show_error(err, "Evaluation failed")
        else:
            st.rerun()

# -- the study: weak vs strong protocol, with intervals ---------------------------------------------------
st.header("The study: weak vs strong protocol")
try:
    results = comparing.study_results()
except ValueError as err:
    state.show_error(err, "The study's results cannot be read")
    st.stop()
if results is None:
    st.info(f"The study's results ({comparing.study_path().name}) are not there yet: `python -m gccs_core.study run` "
            "writes them as it goes.")
    st.stop()
plan = study_table.planned(results)
st.caption(f"{protocol.capitalize()} protocol ({comparing.PROTOCOL_HELP[protocol]}). The study's own models on "
           f"{plan.get('dataset', '?')} (whatever dataset the sidebar shows); mean over the seeds found, with 95% "
           "intervals: the study's bootstrap over seeds and test digits, or a Wilson interval where that is missing or "
           "has zero width.")
rows = study_table.readings_table(results, protocol, norm)
if rows:
    study_fig = charts.interval_figure(rows, f"study: robust accuracy, {protocol} protocol ({label})")
    st.plotly_chart(study_fig, key="study_intervals", width="stretch")
    exports.html_button("dl_study", study_fig, f"study-{protocol}-{norm}")
    cols = ["arm", "reading", "sigma", "eps", "robust", "low", "high", "interval", "seeds", "n", "clean"]
    frame = pd.DataFrame([{k: r[k] for k in cols} for r in rows])
    frame["seeds"] = frame["seeds"].map(lambda s: ", ".join(map(str, s)))
    st.dataframe(frame, hide_index=True, width="stretch", key="study_table")
gone = study_table.missing(results, protocol, norm)
if not rows and not gone["norm_planned"]:
    st.info(f"The study does not evaluate {label}: its plan holds "
            f"{', '.join(comparing.NORM_LABELS.get(n, n) for n in plan.get('norms', []))} only.")
elif not rows:
    st.info(f"The study has no {label} readings under the {protocol} protocol yet.")
for line in comparing.missing_text(gone):
    st.caption("Missing: " + line)
names = study_table.study_models(results, protocol)
if names:
    with st.expander(f"Per-attack table of a study model ({protocol} protocol)"):
        name = st.selectbox("Study model", names, key="study_detail")
        st.dataframe(pd.DataFrame(study_table.attack_breaks(results, name, protocol)), hide_index=True,
                     width="stretch")
        st.caption("How many test digits each attack of the suite broke first (the suite runs in this order and "
                   "stops at the first success); robust = broken by none.")

"""GCCS Explorer: `streamlit run app/main.py`.

The entrypoint sets the page, restores state from the URL, draws the shared sidebar (dataset,
the two models, projection, teacher mode, upload) and routes to the pages. It imports no torch:
the first latent plot of the pretrained models is drawn from shipped numpy files, and a
background thread warms torch, the default models and UMAP afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))

import streamlit as st  # noqa: E402

from app import figures, loaders, registry, state  # noqa: E402
from app.upload import upload_box  # noqa: E402

METHOD_LABELS = {"simplex": "Simplex view (exact)", "pca": "PCA", "lda": "LDA", "umap": "UMAP (approximate)",
                 "decision": "Decision plane (exact, two classes)"}

st.set_page_config(page_title="GCCS Explorer", page_icon=":material/hub:", layout="wide")
figures.use_theme(st.context.theme.type)  # the figures' own colours follow the light or dark theme
state.state_from_url()
state.apply_pending()
state.keep_state()

PAGES = {
    # the default page is served at the root; its url_path only has to be unique
    "latent": st.Page("app_pages/latent.py", title="Latent space", icon=":material/scatter_plot:", url_path="home",
                      default=True),
    "attack": st.Page("app_pages/attack.py", title="Attack", icon=":material/my_location:", url_path="attack"),
    "train": st.Page("app_pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    "compare": st.Page("app_pages/compare.py", title="Compare", icon=":material/leaderboard:", url_path="compare"),
    "draw": st.Page("app_pages/draw.py", title="Draw a digit", icon=":material/draw:", url_path="draw"),
    "learn": st.Page("app_pages/learn.py", title="Learn", icon=":material/school:", url_path="learn"),
    "lesson": st.Page("app_pages/lesson.py", title="Lesson", icon=":material/cast_for_education:", url_path="lesson"),
}
DEEP_LINKS = [st.Page("app_pages/latent.py", title="Latent space", url_path="latent", visibility="hidden")]
# Pages reachable by URL only: /latent shows the latent page (the default page itself lives at /).
# (A comment, not a string: Streamlit magic would print a bare string at the top of every page.)
st.session_state["_pages"] = PAGES
page = st.navigation(list(PAGES.values()) + DEEP_LINKS, position="top" if state.teacher() else "sidebar")

# -- shared sidebar --------------------------------------------------------------------------
datasets = registry.available_datasets()
if st.session_state.get("dataset") not in datasets:
    st.session_state["dataset"] = datasets[0]
models = registry.list_models(st.session_state["dataset"])
keys = [m.key for m in models]
left_default, right_default = registry.default_pair(models)
for side, default in (("left", left_default), ("right", right_default)):
    if st.session_state.get(side) not in keys:
        st.session_state[side] = default
if st.session_state.get("method") not in METHOD_LABELS:
    st.session_state["method"] = "simplex"
if st.session_state.get("dim") not in (2, 3) or st.session_state["method"] == "decision":
    st.session_state["dim"] = 2
n_classes = registry.num_classes(st.session_state["dataset"])
for key, default in (("plane_y", 3), ("plane_t", 8)):
    if not 0 <= int(st.session_state.get(key, default)) < n_classes:
        st.session_state[key] = 0 if key == "plane_y" else 1
    st.session_state.setdefault(key, default)

busy = state.busy()
labels = {m.key: m.label for m in models}
with st.sidebar:
    if not state.teacher():
        st.toggle("Teacher mode", key="teacher", help="Hide the controls and enlarge the plots; the URL keeps it.")
        st.selectbox("Dataset", datasets, key="dataset", disabled=busy,
                     help="digits and mnist5k ship with the app; torchvision datasets appear once on disk.")
        if keys:
            st.selectbox("Left model", keys, key="left", format_func=labels.get, disabled=busy)
            st.selectbox("Right model", keys, key="right", format_func=labels.get, disabled=busy)
        st.radio("Projection", list(METHOD_LABELS), key="method", format_func=METHOD_LABELS.get,
                 disabled=busy, help="Simplex view, PCA and LDA are exact linear maps; UMAP is approximate.")
        if st.session_state["method"] == "decision":
            c_y, c_t = st.columns(2)
            c_y.selectbox("True class y", list(range(n_classes)), key="plane_y", disabled=busy)
            c_t.selectbox("Other class t", list(range(n_classes)), key="plane_t", disabled=busy,
                          help="The plane holds the y-vs-t decision boundary exactly (a targeted attack uses its target).")
        else:
            st.radio("Dimensions", [2, 3], key="dim", horizontal=True, disabled=busy, format_func=lambda d: f"{d}-D")
        # The uploader is drawn only on request: the first page then loads fewer frontend components.
        if st.toggle("Upload a model", key="show_upload", disabled=busy):
            upload_box(disabled=busy)
state.state_to_url()

if state.teacher():
    st.markdown("<style>[data-testid='stSidebar']{display:none} h1{font-size:2.6rem!important}"
                ".stPlotlyChart{font-size:1.2rem}</style>", unsafe_allow_html=True)

page.run()
if state.teacher():
    st.divider()
    st.toggle("Teacher mode", key="teacher", help="Switch off to show the controls again.")

# Warm torch, the default models and UMAP after the first page is drawn (once per server process).
paths = tuple(m.path for m in models if m.key in (left_default, right_default) and m.path)
loaders.start_warm_up(paths)

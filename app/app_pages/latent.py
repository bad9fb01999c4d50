"""Latent space page: two models side by side on the same samples, in one projection."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import exports, figures, loaders, registry, state
from gccs_core.views import view_table

dataset, method, dim = st.session_state["dataset"], st.session_state["method"], int(st.session_state["dim"])
st.title("Latent space")
if not state.teacher():
    st.caption("Each class of a GCCS model is trained to follow a Gaussian N(μₖ, σ²I) centred on a vertex μₖ of a regular "
               "simplex (stars). A cross-entropy model has no vertices: its class means are drawn instead. Ellipses: the "
               "1σ and 2σ contours of each class's fitted Gaussian in this projection. Click a point to inspect it; "
               "box/lasso-select points to attack them on the Attack page.")
entries = [registry.find_model(st.session_state.get(side) or "") for side in ("left", "right")]
if not any(entries):
    st.warning(f"No model for {dataset} yet: train one on the Train page or upload a checkpoint in the sidebar.")
    st.stop()
if method == "decision":
    py, pt = state.plane_pair()
    st.caption(f"Decision plane of classes {py} and {pt}: an exact linear map whose horizontal axis is the normal of the "
               f"model's {py}-vs-{pt} decision boundary, so a point's x is its exact latent distance to that boundary "
               "(dashed line, x = 0); the vertical axis is the largest remaining spread. Stars: the two classes' centres, "
               "or their class means for a model without centres; ellipses: their 1σ and 2σ contours.")
if method == "umap":
    st.info("UMAP is approximate: distances and attack paths are not preserved. Use the simplex view for exact geometry.")

views: list[dict | None] = []
cols = st.columns(2)
for col, side, entry in zip(cols, ("left", "right"), entries):
    with col:
        if entry is None:
            st.info("Pick a model in the sidebar.")
            views.append(None)
            continue
        try:
            with st.spinner("Fitting UMAP (the first fit compiles for a while)…" if method == "umap" else "Embedding…"):
                view = loaders.view_for(entry, method, dim, state.plane_pair())
        except (ValueError, RuntimeError, OSError, ImportError) as err:
            state.show_error(err, f"Cannot project {entry.label}")
            views.append(None)
            continue
        views.append(view)
        selected = st.session_state.get("selected_sample")
        pos = int(np.searchsorted(view["idx"], selected)) if selected is not None else None
        if pos is not None and (pos >= len(view["idx"]) or view["idx"][pos] != selected):
            pos = None
        fig = figures.latent_figure(view, method, f"{entry.label} · {entry.loss}", state.plot_height(), pos,
                                    approximate=method == "umap")
        event = st.plotly_chart(fig, key=f"latent_{side}", on_select="rerun", selection_mode=("points", "box", "lasso"),
                                width="stretch", theme=None, config={"displaylogo": False})
        exports.download_row(f"dl_latent_{side}", fig, lambda v=view, m=method: view_table(v, m),
                             f"{entry.name}-{method}-{dim}d")
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        picked = [int(view["idx"][pos]) for pos in (figures.selected_position(p) for p in points) if pos is not None]
        if picked and picked != st.session_state.get(f"_last_pick_{side}"):
            st.session_state[f"_last_pick_{side}"] = picked
            st.session_state["picked"] = picked
            st.session_state["selected_sample"] = picked[0]
            st.rerun()
        sigma = float(view["sigma"])
        st.caption(f"{str(view['prototype_kind']).capitalize()} · accuracy on these {len(view['idx'])} samples "
                   f"{float(view['accuracy']):.1%}" + (f" · σ = {sigma:g}" if np.isfinite(sigma) else ""))

if method == "umap" and dim == 2:
    loaders.warm_umap_for([e for e, v in zip(entries, views) if e is not None and v is not None])

# -- the selected sample -------------------------------------------------------------------------
sample = st.session_state.get("selected_sample")
shown = [v for v in views if v is not None]
if sample is not None and shown and sample in set(shown[0]["idx"].tolist()):
    picked = st.session_state.get("picked", [])
    st.subheader(f"Sample {sample}" + (f" ({len(picked)} picked for the Attack page)" if len(picked) > 1 else ""))
    v0 = shown[0]
    pos = int(np.searchsorted(v0["idx"], sample))
    names = [str(c) for c in v0["class_names"]]
    c_img, *c_models = st.columns([1, 2, 2])
    with c_img:
        st.image(figures.upscale(v0["images"][pos] / 255.0, 140), caption=f"label {names[int(v0['y'][pos])]}")
    for c, entry, view in zip(c_models, entries, views):
        if view is None or entry is None:
            continue
        with c:
            pred = int(view["pred"][pos])
            st.markdown(f"**{entry.label}** predicts **{names[pred]}**")
            st.plotly_chart(figures.distance_bars(view["dist"][pos], names, str(view["prototype_kind"]), pred),
                            key=f"dist_{entry.key}", width="stretch")
else:
    st.caption("Click a point to see its image, label, prediction and distance to every vertex.")

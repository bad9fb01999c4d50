"""Draw page: draw a digit (or upload a picture) and see where it lands in both models' latent spaces."""

from __future__ import annotations

import streamlit as st

from app import drawing, figures, registry, state

dataset, method = st.session_state["dataset"], st.session_state["method"]
st.title("Draw a digit")
st.caption("Draw a digit with the mouse (or a finger), or upload a small picture of one. The library turns it into an "
           f"input like the {dataset} test images (grayscale, light ink on black, cropped, scaled and centred like "
           "the dataset's digits) and both models place it in their latent spaces.")
if registry.num_classes(dataset) != 10 or dataset not in ("digits", "mnist5k", "mnist"):
    st.info(f"The models of {dataset} were not trained on digits: any picture is accepted, but the predictions "
            "are about that dataset's classes.")

c_in, c_seen = st.columns([2, 1])
with c_in:
    source = st.radio("Picture", ["Draw", "Upload"], horizontal=True, key="draw_source")
    image = None
    try:
        from streamlit_drawable_canvas import st_canvas
    except ImportError:  # an install without the optional canvas: uploads still work
        st_canvas = None
        if source == "Draw":
            st.info("The drawing canvas needs the package streamlit-drawable-canvas (requirements.txt); "
                    "upload a picture instead.")
    if source == "Draw" and st_canvas is not None:
        canvas = st_canvas(stroke_width=22, stroke_color="#FFFFFF", background_color="#000000", height=280, width=280,
                           drawing_mode="freedraw", key="draw_canvas", return_image_data=True)
        data = getattr(canvas, "image_data", None) if canvas is not None else None
        if data is not None and data[..., :3].max() > 0:
            image = data
    elif source == "Upload":
        up = st.file_uploader("A PNG or JPG of one digit", type=drawing.UPLOAD_TYPES, key="draw_upload",
                              max_upload_size=drawing.MAX_UPLOAD_MB)
        image = up.getvalue() if up is not None else None
if image is None:
    st.info("Draw a digit in the black square, or upload a picture, to see where it lands.")
    st.stop()
try:
    x = drawing.model_input(image, dataset)
except ValueError as err:
    state.show_error(err, "Cannot use this picture")
    st.stop()
with c_seen:
    st.image(figures.upscale(x[0].transpose(1, 2, 0), 168), caption="what the models see", clamp=True)

if method not in ("simplex", "pca", "lda", "umap", "decision"):
    method = "simplex"
with c_seen:
    attack = None
    if st.toggle("Attack it (PGD)", key="draw_attack", help="Untargeted L∞ PGD, 20 steps, from your picture."):
        n_classes = registry.num_classes(dataset)
        st.selectbox("Its true class", list(range(n_classes)), key="draw_label",
                     help="The class you meant: the attack tries to move the picture out of it.")
        st.slider("eps (per pixel, in [0, 1])", 0.0, 0.5, 0.15, 0.01, key="draw_eps")
        st.radio("Objective", ["margin", "ce"], horizontal=True, key="draw_objective",
                 format_func={"margin": "margin", "ce": "cross-entropy"}.get)
        attack = {"label": st.session_state["draw_label"], "eps": st.session_state["draw_eps"],
                  "objective": st.session_state["draw_objective"]}
cols = st.columns(2)
for col, side in zip(cols, ("left", "right")):
    entry = registry.find_model(st.session_state.get(side) or "")
    with col:
        if entry is None:
            st.info("Pick a model in the sidebar.")
            continue
        try:
            with st.spinner("Embedding…"):
                land, hit = drawing.landing(entry, x, method, state.plane_pair(), state.plot_height(), attack)
        except (ValueError, RuntimeError, OSError, ImportError) as err:
            state.show_error(err, f"Cannot place the picture for {entry.label}")
            continue
        st.plotly_chart(land.figure, key=f"draw_latent_{side}", width="stretch", theme=None, config={"displaylogo": False})
        names = land.names
        nearest, second = (int(k) for k in land.distances.argsort()[:2])
        st.markdown(f"**{entry.label}** predicts **{names[land.pred]}**")
        st.caption(figures.summary_lines(
            f"{entry.label}: the picture (the large cross) among the test samples in the {method} view",
            {"predicted class": names[land.pred], f"nearest {figures.singular(land.kind)}": names[nearest],
             "its distance": f"{land.distances[nearest]:.2f}",
             "second nearest": f"{names[second]} at {land.distances[second]:.2f}"}))
        st.plotly_chart(figures.distance_bars(land.distances, names, land.kind, land.pred), key=f"draw_dist_{side}",
                        width="stretch")
        if hit is not None:
            verdict = "fooled" if hit.fooled else "not fooled"
            st.markdown(f"Under attack (eps {attack['eps']:g}, {attack['objective']}): predicts **{names[hit.pred]}**, "
                        f"{verdict}.")
            st.image(figures.upscale(hit.x_adv[0].transpose(1, 2, 0), 112), caption="the attacked picture", clamp=True)

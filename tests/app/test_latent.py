"""AppTest: the entrypoint, the Latent space page, URL state, teacher mode and upload."""

from __future__ import annotations

import numpy as np
from apptest import arr, errors, names, run_app, spec_by_trace, specs, trace, url


def test_latent_page_shows_vertices_means_and_ellipses(pretrained):
    at = run_app()
    assert not at.exception and not errors(at)
    left = spec_by_trace(at, "simplex vertices")
    right = spec_by_trace(at, "class means")
    assert left is not right
    for spec in (left, right):
        assert [f"Gaussian {k}" for k in range(10)] == [n for n in names(spec) if n.startswith("Gaussian")]
        assert [str(k) for k in range(10)] == names(spec)[:10]
    assert "simplex edges" in names(left) and "simplex edges" not in names(right)
    # the GCCS vertices sit on a regular 10-gon in the simplex view
    v = trace(left, "simplex vertices")
    radii = np.hypot(arr(v["x"]), arr(v["y"]))
    np.testing.assert_allclose(radii, radii[0], rtol=1e-4)
    assert v["text"] == [str(k) for k in range(10)]
    # both panels show the same number of samples (the same ones)
    n_left = sum(len(arr(trace(left, str(k))["x"])) for k in range(10))
    n_right = sum(len(arr(trace(right, str(k))["x"])) for k in range(10))
    assert n_left == n_right == 360
    # each ellipse trace holds a 1-sigma and a 2-sigma contour separated by a gap
    ell = arr(trace(left, "Gaussian 3")["x"])
    assert np.isnan(ell).sum() == 2 and len(ell) == 2 * 50
    assert url(at, "dataset") == "digits" and url(at, "method") == "simplex"


def test_projection_and_model_widgets_change_the_figure(pretrained):
    at = run_app()
    before = arr(trace(spec_by_trace(at, "simplex vertices"), "simplex vertices")["x"])
    at.radio(key="method").set_value("pca").run()
    assert not at.exception
    after = arr(trace(spec_by_trace(at, "simplex vertices"), "simplex vertices")["x"])
    assert not np.allclose(before, after)
    assert any(n.startswith("Gaussian") for n in names(spec_by_trace(at, "simplex vertices")))
    # put the cross-entropy model in both panels: no vertices left, class means twice
    at.selectbox(key="left").set_value("pretrained:digits-ce").run()
    assert not at.exception
    assert sum("class means" in names(s) for s in specs(at)) == 2
    assert all("simplex vertices" not in names(s) for s in specs(at))
    assert url(at, "left") == "pretrained:digits-ce" and url(at, "method") == "pca"


def test_three_d_view_and_lda(pretrained):
    at = run_app()
    at.radio(key="dim").set_value(3).run()
    assert not at.exception and not errors(at)
    types = {d.get("type") for s in specs(at) for d in s["data"]}
    assert types == {"scatter3d"}
    at.radio(key="dim").set_value(2)
    at.radio(key="method").set_value("lda").run()
    assert not at.exception
    assert all(d.get("type") == "scatter" for s in specs(at) for d in s["data"])


def test_url_state_and_teacher_mode(pretrained):
    at = run_app({"method": "pca", "teacher": "1", "right": "pretrained:digits-gccs"})
    assert not at.exception
    assert at.session_state["method"] == "pca" and at.session_state["teacher"] is True
    # teacher mode: the model pickers are hidden, the plots are taller
    assert not [w for w in at.selectbox if w.key in ("left", "right", "dataset")]
    assert all(s["layout"]["height"] == 720 for s in specs(at))
    assert sum("simplex vertices" in names(s) for s in specs(at)) == 2


def test_bad_upload_gets_a_clear_message_and_the_app_keeps_working(pretrained):
    at = run_app()
    at.toggle(key="show_upload").set_value(True).run()
    at.file_uploader(key="upload_file").set_value(("bad.safetensors", b"\x09\x00\x00\x00\x00\x00\x00\x00{not json", None))
    at.run()
    assert not at.exception
    assert any("Could not use bad.safetensors" in e and "not valid JSON" in e for e in errors(at))
    assert len(specs(at)) == 2  # the latent plots are still there


def test_good_upload_becomes_selectable(pretrained):
    at = run_app()
    at.toggle(key="show_upload").set_value(True).run()
    data = pretrained["gccs"].read_bytes()
    at.file_uploader(key="upload_file").set_value(("mine.safetensors", data, None))
    at.run()
    assert not at.exception and not errors(at)
    right = at.session_state["right"]
    assert right.startswith("upload:")
    assert any(o.startswith("mine [") and o.endswith("(uploaded)") for o in at.selectbox(key="left").options)
    assert sum("simplex vertices" in names(s) for s in specs(at)) == 2  # the uploaded GCCS model is on the right


def test_teacher_mode_can_be_left(pretrained):
    at = run_app({"teacher": "1"})
    at.toggle(key="teacher").set_value(False).run()
    assert not at.exception
    assert url(at, "teacher") == "0"
    assert {"left", "right", "dataset"} <= {w.key for w in at.selectbox}


def test_settings_survive_page_changes_and_teacher_mode(pretrained):
    at = run_app({"right": "pretrained:digits-gccs"})
    at.radio(key="method").set_value("pca").run()
    at.switch_page("app_pages/attack.py").run()
    at.slider(key="eps").set_value(0.27)
    at.slider(key="n_samples").set_value(3)
    at.button(key="run_attack").click().run()  # form values are committed on submit
    at.switch_page("app_pages/learn.py").run()
    assert at.session_state["eps"] == 0.27 and at.session_state["method"] == "pca"
    at.toggle(key="teacher").set_value(True).run()
    at.switch_page("app_pages/latent.py").run()  # sidebar hidden: its widgets are not drawn
    assert not at.exception
    assert at.session_state["right"] == "pretrained:digits-gccs" and at.session_state["method"] == "pca"
    assert url(at, "eps") == "0.27" and url(at, "teacher") == "1"

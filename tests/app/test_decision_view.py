"""AppTest: the "Decision plane" projection on the Latent space and Attack pages, and its bad inputs."""

from __future__ import annotations

import numpy as np
from apptest import arr, errors, names, run_app, specs, trace


def _decision_app(**query: str):
    return run_app({"method": "decision", "plane_y": "3", "plane_t": "8", **query})


def test_latent_page_draws_the_exact_boundary_of_the_chosen_pair(pretrained):
    at = _decision_app()
    assert not at.exception and not errors(at)
    figs = specs(at)
    assert len(figs) == 2
    for spec in figs:
        line = trace(spec, "decision boundary")
        np.testing.assert_allclose(arr(line["x"]), [0.0, 0.0])  # the boundary is the line x = 0
        assert {"Gaussian 3", "Gaussian 8"} <= set(names(spec)) and "Gaussian 5" not in names(spec)
        assert spec["layout"]["xaxis"]["title"]["text"] == "signed latent distance to the boundary"
        # class 3's points lie mostly left of the line, class 8's right (trained models, if weakly)
        x3, x8 = arr(trace(spec, "3")["x"]), arr(trace(spec, "8")["x"])
        assert np.median(x3) < 0 < np.median(x8)
    assert "class means" in names(figs[1]) and "simplex vertices" in names(figs[0])
    assert any("Decision plane of classes 3 and 8" in c.value for c in at.caption)


def test_attack_animation_in_the_decision_plane_shows_distance_and_perturbation(pretrained):
    at = _decision_app(eps="0.2", steps="4", n_samples="6", samples="one class", sample_class="3")
    at.switch_page("app_pages/attack.py").run()
    at.button(key="run_attack").click().run()
    assert not at.exception and not errors(at)
    anim = next(s for s in specs(at) if "moving 1" in names(s))
    assert {"boundary 1", "boundary 2"} <= set(names(anim)) and len(anim["frames"]) == 5
    for frame in anim["frames"]:
        moving = next(d for d in frame["data"] if d.get("name") == "moving 1")
        custom = arr(moving["customdata"]).reshape(-1, 4)
        np.testing.assert_allclose(custom[:, 2], arr(moving["x"]), rtol=1e-5, atol=1e-5)  # x is the distance
        assert (custom[:, 3] <= 0.2 + 1e-4).all()  # L-inf perturbation within eps
    last = next(d for d in anim["frames"][-1]["data"] if d.get("name") == "moving 1")
    assert arr(last["customdata"]).reshape(-1, 4)[:, 3].max() > 0
    assert any("Decision plane of 3 vs 8" in c.value for c in at.caption)


def test_a_pair_of_one_class_is_explained_and_the_rest_of_the_page_works(pretrained):
    at = run_app({"method": "decision", "plane_y": "4", "plane_t": "4"})
    assert not at.exception
    assert sum("y=4 and t=4 are the same class" in e for e in errors(at)) == 2
    at.switch_page("app_pages/attack.py").run()
    at.button(key="run_attack").click().run()
    assert not at.exception
    assert any(e.startswith("The attack could not run: y=4 and t=4 are the same class") for e in errors(at))
    at.selectbox(key="plane_t").set_value(9).run()
    assert not at.exception and not errors(at) and len(specs(at)) >= 1

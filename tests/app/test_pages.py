"""AppTest: the Attack, Train, Compare and Learn pages and the presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from apptest import arr, errors, names, run_app, spec_by_trace, specs, trace, wait_training

from gccs_core.simplex import edge_length, pairwise_bayes_error


def _attack(at, **settings):
    for key, value in settings.items():
        widget = next(w for w in (*at.selectbox, *at.slider, *at.number_input, *at.radio) if w.key == key)
        widget.set_value(value)
    at.button(key="run_attack").click().run()
    assert not at.exception, at.exception
    return at


def test_attack_page_animates_both_models(pretrained):
    at = run_app(page="attack")
    assert not at.exception and not errors(at)
    assert any("Run attack" in i.value for i in at.info)  # nothing computed before the click
    _attack(at, steps=5, eps=0.2, n_samples=8)
    assert not errors(at)
    anim = spec_by_trace(at, "moving 1")
    assert len(anim["frames"]) == 6  # clean + 5 steps
    moving = [names(anim).index(n) for n in ("trails 1", "moving 1", "trails 2", "moving 2")]
    assert all(f["traces"] == moving for f in anim["frames"])
    assert {"simplex vertices", "class means"} <= set(names(anim))
    # the class Gaussians are layout shapes in animations (faster to draw), one per class and panel
    ellipses = {(sh["name"], sh["xref"]) for sh in anim["layout"]["shapes"]}
    assert {("Gaussian 0", "x"), ("Gaussian 9", "x2")} <= ellipses
    assert [s["label"] for s in anim["layout"]["sliders"][0]["steps"]] == [f"step {t}" for t in range(6)]
    assert [b["label"] for b in anim["layout"]["updatemenus"][0]["buttons"]] == ["▶ Play", "❚❚ Pause"]
    # the points move: the last frame differs from the clean one, and 8 samples per panel
    x0 = arr(anim["frames"][0]["data"][1]["x"])
    x5 = arr(anim["frames"][5]["data"][1]["x"])
    assert len(x0) == 8 and not np.allclose(x0, x5)
    # the clean points are one image per panel behind the axes, not 2 x 360 SVG markers
    images = anim["layout"]["images"]
    assert [(im["name"], im["xref"], im["yref"]) for im in images] == [("clean points", "x", "y"),
                                                                      ("clean points", "x2", "y2")]
    assert all(im["source"].startswith("data:image/png;base64,") for im in images)
    # below the animation one tab at a time: the step-by-step tab first, without the other tabs' charts
    assert [t.label for t in at.tabs] == ["Step by step", "Flips per step", "Robust accuracy vs eps"]
    assert any("step 5: predicted" in m.value for m in at.markdown)
    assert not any("robust accuracy" in s["layout"].get("title", {}).get("text", "") for s in specs(at))
    # per-step images: moving the step slider changes the caption of the prediction
    at.slider(key="img_step").set_value(0).run()
    assert not at.exception and any("step 0: predicted" in m.value for m in at.markdown)
    at.session_state["attack_tab"] = "Flips per step"
    at.run()
    flips = spec_by_trace(at, "digits-gccs · gccs")
    assert len(flips["data"]) == 2 and len(arr(flips["data"][0]["y"])) == 6
    assert not any("step 0: predicted" in m.value for m in at.markdown)
    at.session_state["attack_tab"] = "Robust accuracy vs eps"
    at.run()
    robust = next(s for s in specs(at) if "robust accuracy" in s["layout"].get("title", {}).get("text", ""))
    acc = arr(robust["data"][0]["y"])
    assert acc[0] >= acc[-1] and len(robust["data"]) == 2
    assert len(spec_by_trace(at, "moving 1")["frames"]) == 6  # the animation stays while tabs switch


def test_targeted_attack_and_widgets_change_the_animation(pretrained):
    at = run_app(page="attack")
    _attack(at, attack="pgd-targeted", target=8, samples="one class", sample_class=3, n_samples=5, steps=4, eps=0.3)
    assert not errors(at)
    assert any("Targeted PGD → 8" in c.value for c in at.caption)
    anim = spec_by_trace(at, "moving 1")
    assert len(anim["frames"]) == 5
    labels = arr(trace(anim, "moving 1")["customdata"]).reshape(-1, 2)[:, 0] if isinstance(
        trace(anim, "moving 1")["customdata"], dict) else np.asarray(trace(anim, "moving 1")["customdata"])[:, 0]
    assert set(labels.tolist()) == {3}
    _attack(at, attack="fgsm")
    assert len(spec_by_trace(at, "moving 1")["frames"]) == 2  # FGSM: clean + one step


def test_attack_errors_are_messages_not_tracebacks(pretrained):
    at = run_app(page="attack")
    _attack(at, samples="picked")
    assert any("no points picked yet" in e for e in errors(at))
    _attack(at, samples="random", objective="latent", steps=2, n_samples=3)  # CE has no centres to attack
    assert any("The attack could not run" in e for e in errors(at))


def test_train_page_trains_saves_and_animates(pretrained):
    at = run_app(page="train")
    assert not at.exception and not errors(at)
    at.text_input(key="tr_name").set_value("tiny gccs")
    at.number_input(key="tr_epochs").set_value(2)
    at.button(key="train_start").click().run()
    at = wait_training(at)  # training runs in a worker thread
    assert not at.exception and not errors(at), errors(at)
    assert at.session_state["training"] is False  # controls unlocked again
    assert any("Saved **tiny-gccs**" in s.value for s in at.success)
    saved = Path(pretrained["gccs"]).parent.parent
    assert any(p.name == "model.safetensors" for p in saved.rglob("tiny-gccs/model.safetensors"))
    anim = spec_by_trace(at, "moving 1")
    assert [f["name"] for f in anim["frames"]] == ["0", "1"]
    assert [s["label"] for s in anim["layout"]["sliders"][0]["steps"]] == ["epoch 1", "epoch 2"]
    assert "simplex vertices" in names(anim)
    assert any(s["layout"].get("title", {}).get("text") == "accuracy" for s in specs(at))
    # the new model is selectable at once
    assert any(o.startswith("tiny-gccs") for o in at.selectbox(key="left").options)


def test_train_page_rejects_bad_settings(pretrained):
    at = run_app(page="train")
    at.number_input(key="tr_latent_dim").set_value(3)
    at.button(key="train_start").click().run()
    assert not at.exception
    assert any("Invalid settings" in e and "latent_dim=3" in e for e in errors(at))
    assert "train_result" not in at.session_state


def test_compare_page_table_curves_and_quick_evaluation(pretrained):
    at = run_app(page="compare")
    assert not at.exception and not errors(at)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["digits-gccs · gccs"]
    assert {"clean", "eps 0", "eps 0.1"} <= set(table.columns)
    curves = spec_by_trace(at, "digits-gccs · gccs")
    assert arr(curves["data"][0]["x"]).tolist() == [0.0, 0.1]
    # the cross-entropy model has no report: evaluate it here
    at.button(key="eval_run").click().run()
    assert not at.exception and not errors(at)
    table = at.dataframe[0].value
    assert sorted(table["model"]) == ["digits-ce · ce", "digits-gccs · gccs"]


def test_learn_page_geometry_and_presets(pretrained):
    at = run_app(page="learn")
    assert not at.exception and not errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Edge length Δ"] == f"{edge_length(10, 10.0):.3f}"
    at.slider(key="geo_sigma").set_value(4.0).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pairwise Bayes error"] == f"{pairwise_bayes_error(10, 10.0, 4.0):.3g}"
    assert any("reconstruction" in w.value for w in at.warning)
    at.button(key="preset_targeted").click().run()
    assert not at.exception and not errors(at)
    assert at.session_state["attack"] == "pgd-targeted" and at.session_state["target"] == 8
    anim = spec_by_trace(at, "moving 1")  # the preset ran the attack on arrival
    assert len(anim["frames"]) == 31


def test_preset_train_gccs_live(pretrained):
    at = run_app(page="learn")
    at.button(key="preset_train").click().run()
    at = wait_training(at)
    assert not at.exception and not errors(at)
    assert any("Saved **digits-gccs" in s.value for s in at.success)

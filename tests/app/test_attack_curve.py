"""AppTest of the Attack page's robust-accuracy curve (a fixed eps grid per norm, the run's eps marked) and of the
warm-up that the Attack page wakes early, on the tiny digits models."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from apptest import arr, errors, run_app, specs

from app import attacking, loaders


def _attack(at, **settings):
    at.session_state["attack_tab"] = "Robust accuracy vs eps"  # the curve's tab (only the open tab is drawn)
    for key, value in settings.items():
        widget = next(w for w in (*at.selectbox, *at.slider, *at.number_input, *at.radio) if w.key == key)
        widget.set_value(value)
    at.button(key="run_attack").click().run()
    assert not at.exception, at.exception
    assert not errors(at), errors(at)
    return at


def _curve(at):
    return next(s for s in specs(at) if "robust accuracy vs" in s["layout"].get("title", {}).get("text", ""))


def _run_eps_marks(spec):
    return [sh["x0"] for sh in spec["layout"].get("shapes", []) if sh.get("type") == "line"]


def test_the_curve_is_the_librarys_evaluation_on_the_attacked_samples(pretrained):
    from gccs_core import load_dataset, load_model
    from gccs_core.evaluate import evaluate_robustness

    at = _attack(run_app(page="attack"), eps=0.2, steps=5, n_samples=8)
    out = at.session_state["attack_out"]
    curve = _curve(at)
    grid = list(attacking.curve_eps("linf"))
    label = attacking.suite_label("pgd", "ce", 5)
    data = load_dataset("digits", "test")
    idx = np.asarray(out["idx"])
    assert [d["name"] for d in curve["data"]] == ["digits-gccs · gccs", "digits-ce · ce"]
    for trace, loss in zip(curve["data"], ("gccs", "ce")):
        model = load_model(pretrained[loss]).eval()
        want = evaluate_robustness(model, data.x[idx], data.y[idx], grid, norm="linf", steps=5, attacks=[label],
                                   min_l2=None, seed=0).worst_case()
        assert arr(trace["x"]).tolist() == pytest.approx(grid)
        np.testing.assert_allclose(arr(trace["y"]), want, atol=1e-9)
    assert _run_eps_marks(curve) == [pytest.approx(0.2)]


def test_a_new_eps_on_the_same_samples_keeps_the_curve_and_moves_the_mark(pretrained):
    at = _attack(run_app(page="attack"), eps=0.1, steps=5, n_samples=8)
    first = _curve(at)
    _attack(at, eps=0.45)  # past 0.15 the old curve's radii used to follow eps (0..2 eps)
    second = _curve(at)
    for a, b in zip(first["data"], second["data"]):
        assert arr(a["x"]).tolist() == arr(b["x"]).tolist() == pytest.approx(list(attacking.curve_eps("linf")))
        np.testing.assert_array_equal(arr(a["y"]), arr(b["y"]))
    assert _run_eps_marks(first) == [pytest.approx(0.1)] and _run_eps_marks(second) == [pytest.approx(0.45)]


def test_an_l2_curve_spans_the_l2_slider(pretrained):
    at = _attack(run_app({"norm": "l2", "eps": "1.5"}, page="attack"), steps=3, n_samples=6)
    curve = _curve(at)
    assert "L2 eps" in curve["layout"]["title"]["text"]
    xs = arr(curve["data"][0]["x"])
    assert xs[0] == 0.0 and xs[-1] == pytest.approx(attacking.EPS_RANGE["l2"]["max"])
    assert _run_eps_marks(curve) == [pytest.approx(1.5)]


def test_the_attack_page_wakes_the_warm_up_before_its_delay(pretrained, monkeypatch):
    monkeypatch.setattr(loaders, "WARM_UP_DELAY_S", 600.0)
    loaders._WAKE.clear()
    thread = threading.Thread(target=loaders._warm, args=([str(pretrained["gccs"])], False), daemon=True)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive()  # still waiting out its delay
    run_app(page="attack")
    assert loaders._WAKE.is_set()
    thread.join(120)
    assert not thread.is_alive()  # woken: it loaded torch, the model and its dataset, and ended


def test_the_warm_up_finds_the_datasets_of_its_models(pretrained, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    paths = [str(pretrained["gccs"]), str(broken), str(pretrained["ce"])]
    assert loaders._datasets_of(paths) == ["digits"]

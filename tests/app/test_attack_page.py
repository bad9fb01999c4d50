"""AppTest of the Attack page's threat models, transfer replay and per-step bars, on the tiny digits models."""

from __future__ import annotations

import re

import numpy as np
import pytest
from apptest import arr, errors, run_app, specs, url

from app import attacking


def _set(at, **settings):
    for key, value in settings.items():
        widget = next(w for w in (*at.selectbox, *at.slider, *at.number_input, *at.radio) if w.key == key)
        widget.set_value(value)
    return at


def _attack(at, **settings):
    _set(at, **settings)
    at.button(key="run_attack").click().run()
    assert not at.exception, at.exception
    return at


def _eps_slider(at):
    return at.slider(key="eps")


def _bars(at):
    return next(s for s in specs(at) if "what each model sees" in s["layout"].get("title", {}).get("text", ""))


def test_the_norm_switches_the_eps_range_and_an_l2_attack_stays_in_its_ball(pretrained):
    at = run_app(page="attack")
    assert _eps_slider(at).proto.max == pytest.approx(0.5) and "L∞" in _eps_slider(at).label
    at.radio(key="norm").set_value("l2").run()
    assert not at.exception
    assert _eps_slider(at).proto.max == pytest.approx(5.0) and "L2" in _eps_slider(at).label
    assert _eps_slider(at).value == pytest.approx(attacking.EPS_RANGE["l2"]["default"])
    _attack(at, eps=1.5, steps=5, n_samples=6, objective="margin")
    assert not errors(at) and any("L2 ball" in c.value for c in at.caption)
    assert url(at, "norm") == "l2" and url(at, "eps") == "1.5"
    out = at.session_state["attack_out"]
    delta = (out["panels"][0].x - out["panels"][0].x[:1]).reshape(out["n_frames"], 6, -1)
    l2 = np.sqrt((delta.astype(np.float64) ** 2).sum(-1))
    assert l2.max() <= 1.5 * 1.01 and l2[-1].max() > 0.5  # inside the L2 ball (float16 frames), and it moved
    assert np.abs(delta).max() > 0.05
    at.radio(key="norm").set_value("linf").run()
    assert _eps_slider(at).proto.max == pytest.approx(0.5) and _eps_slider(at).value == pytest.approx(0.15)


@pytest.mark.parametrize("attack", attacking.NORM_ATTACKS["l2"])
def test_every_attack_offered_in_l2_runs_in_l2(pretrained, attack):
    at = run_app({"norm": "l2", "eps": "2.0"}, page="attack")
    assert attacking.ATTACK_CHOICES[attack] in at.selectbox(key="attack").options
    _attack(at, attack=attack, steps=2, n_samples=3)
    assert not errors(at), errors(at)
    assert any("L2 ball" in c.value for c in at.caption)


def test_url_keys_norm_and_transfer_are_read_and_bad_ones_fall_back(pretrained):
    at = run_app({"norm": "l2", "eps": "2.5", "transfer": "right", "attack": "bim"}, page="attack")
    assert not at.exception
    assert (at.session_state["norm"], at.session_state["eps"], at.session_state["transfer"]) == ("l2", 2.5, "right")
    assert at.selectbox(key="transfer").value == "right"
    bad = run_app({"norm": "l7", "eps": "3.0", "transfer": "sideways"}, page="attack")
    assert not bad.exception and not errors(bad)
    assert (bad.session_state["norm"], bad.session_state["transfer"]) == ("linf", "none")
    assert bad.session_state["eps"] == pytest.approx(0.15)  # 3.0 is outside the L-inf range


def test_transfer_replays_the_left_models_attack_on_the_right_model(pretrained):
    import torch

    from gccs_core import load_dataset, load_model
    from gccs_core.transfer import transfer_attack

    at = run_app(page="attack")
    _attack(at, transfer="left", eps=0.3, steps=5, n_samples=10)
    assert not errors(at)
    note = next(i.value for i in at.info if i.value.startswith("Transfer:"))
    out = at.session_state["attack_out"]
    assert "crafted here" in out["panels"][0].title and "replayed from" in out["panels"][1].title
    # the very same inputs in both panels, and the rates the library computes for these samples
    np.testing.assert_array_equal(out["panels"][0].x, out["panels"][1].x)
    left, right = (next(e for e in out["keys"] if e.endswith(k)) for k in ("digits-gccs", "digits-ce"))
    assert out["keys"] == [left, right]
    data = load_dataset("digits", "test")
    idx = torch.as_tensor(out["idx"])
    ref = transfer_attack(load_model(pretrained["gccs"]), load_model(pretrained["ce"]), data.x[idx], data.y[idx],
                          attack="pgd", eps=0.3, steps=5, objective="ce", seed=0)
    rates = [int(v) / 100 for v in re.findall(r"(\d+)%", note)]
    assert rates == [round(ref.source_rate * 100) / 100, round(ref.transfer_rate * 100) / 100]
    assert np.array_equal(out["panels"][1].pred, ref.replayed.pred)
    # the bars show both: the crafting model's own reading and the replay
    titles = [a["text"] for a in _bars(at)["layout"]["annotations"]]
    assert "crafted here" in titles[0] and "replayed from" in titles[1]


def test_step_bars_show_vertex_distances_and_class_scores_of_the_chosen_sample(pretrained):
    import torch

    from gccs_core import load_dataset, load_model

    at = run_app(page="attack")
    _attack(at, eps=0.3, steps=4, n_samples=5)
    bars = _bars(at)
    kinds = [d["name"] for d in bars["data"]]
    assert kinds == ["distance", "score"]  # GCCS: distance to each vertex; CE: class scores
    out = at.session_state["attack_out"]
    at.slider(key="img_step").set_value(0).run()
    at.selectbox(key="img_sample").set_value(2).run()
    assert not at.exception
    bars = _bars(at)
    dist, score = arr(bars["data"][0]["y"]), arr(bars["data"][1]["y"])
    data = load_dataset("digits", "test")
    x = data.x[torch.as_tensor(out["idx"][2:3])]
    gccs, ce = load_model(pretrained["gccs"]), load_model(pretrained["ce"])
    with torch.no_grad():
        z = gccs.embed(x)[0].numpy()
        want_dist = np.linalg.norm(gccs.centers.numpy() - z, axis=1)
        want_score = ce(x)[0].numpy()
    np.testing.assert_allclose(dist, want_dist, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(score, want_score, rtol=1e-3, atol=1e-3)
    assert "step 0" in bars["layout"]["title"]["text"]
    at.slider(key="img_step").set_value(4).run()
    moved = arr(_bars(at)["data"][0]["y"])
    assert not np.allclose(moved, dist) and int(np.argmin(moved)) == int(out["panels"][0].pred[4, 2])


def test_a_preset_runs_in_linf_white_box_whatever_was_chosen_before(pretrained):
    at = run_app({"norm": "l2", "eps": "2.0", "transfer": "left"}, page="attack")
    assert at.session_state["norm"] == "l2"
    at.switch_page("app_pages/learn.py").run()
    at.button(key="preset_pgd").click().run()
    assert not at.exception and not errors(at)
    out = at.session_state["attack_out"]
    assert (out["norm"], out["transfer"], out["eps"]) == ("linf", "none", 0.2)
    assert not any(i.value.startswith("Transfer:") for i in at.info)

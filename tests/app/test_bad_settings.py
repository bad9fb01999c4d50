"""The app explains every invalid combination of settings (hypothesis over the Attack and Train forms), never a traceback.

Moved from tests/test_properties.py with the app fixtures into tests/app/.
"""

from __future__ import annotations

from typing import Any

from apptest import errors, run_app, specs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# -- the app: invalid combinations are explained, never a traceback -----------------------------------------

_APPS: dict[str, Any] = {}


def _app(page: str) -> Any:
    """One AppTest session per page, reused across examples (a user changing settings again and again)."""
    if page not in _APPS:
        _APPS[page] = run_app(page=page)
    return _APPS[page]


def _set(at: Any, **values: Any) -> None:
    for key, value in values.items():
        widget = next(w for w in (*at.selectbox, *at.slider, *at.number_input, *at.radio, *at.toggle) if w.key == key)
        widget.set_value(value)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(attack=st.sampled_from(["pgd", "fgsm", "mim", "bim", "pgd-targeted"]), eps=st.sampled_from([0.0, 0.01, 0.3, 0.5]),
       steps=st.integers(1, 3), objective=st.sampled_from(["ce", "margin", "dlr", "latent"]),
       samples=st.sampled_from(["random", "one class", "picked"]), sample_class=st.integers(0, 9),
       target=st.integers(0, 9), n_samples=st.integers(1, 4))
def test_app_attack_page_explains_every_combination(pretrained: Any, attack: str, eps: float, steps: int, objective: str,
                                                    samples: str, sample_class: int, target: int, n_samples: int) -> None:
    at = _app("attack")
    _set(at, attack=attack, eps=eps, steps=steps, objective=objective, samples=samples, sample_class=sample_class,
         target=target, n_samples=n_samples)
    at.button(key="run_attack").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errs = errors(at)
    body = " ".join(m.value for m in at.markdown)
    assert "Traceback" not in body
    if samples == "picked":  # nothing was picked on the latent page in this session
        assert any(e.startswith("The attack could not run: no points picked yet") for e in errs), errs
    elif objective == "latent":  # the right panel's default model is cross-entropy: it has no class centres
        assert any(e.startswith("The attack could not run: objective='latent' needs a model with class centres")
                   for e in errs), errs
    else:  # every other combination runs
        assert not [e for e in errs if e.startswith("The attack could not run")], errs
        assert any(d.get("name") == "moving 1" for s in specs(at) for d in s["data"])


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(loss=st.sampled_from(["gccs", "mmc"]), latent_dim=st.integers(2, 8), sigma=st.floats(0.05, 10.0),
       epochs=st.integers(1, 50), lr=st.floats(1e-5, 1.0))
def test_app_train_page_explains_an_impossible_simplex(pretrained: Any, loss: str, latent_dim: int, sigma: float,
                                                       epochs: int, lr: float) -> None:
    """A simplex of 10 classes needs d >= 9: the form says so, names the setting, and trains nothing."""
    at = _app("train")
    _set(at, tr_loss=loss, tr_latent_dim=latent_dim, tr_sigma=sigma, tr_epochs=epochs, tr_lr=lr)
    at.button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(e.startswith("Invalid settings: latent_dim=") and "needs latent_dim >= 9" in e for e in errors(at)), errors(at)
    assert "train_result" not in at.session_state and not ("training" in at.session_state and at.session_state["training"])

"""A network of the user's own through the app's upload (architecture picked from a list + a weights file):
a good file becomes selectable and is drawn on the latent and attack pages; every hostile weights file gets
one clear message in the page, nothing is registered (no half-loaded model reaches the model list), no code runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from apptest import errors, make_pretrained, names, run_app, set_env, specs, wait_training
from safetensors.torch import save as st_save
from test_external_weights import ARCH, hostile_files

from gccs_core.data import load_dataset
from gccs_core.weights import build_arch

ENV_KEYS = ("GCCS_PRETRAINED_DIR", "GCCS_USER_MODELS", "GCCS_APP_FAST", "GCCS_APP_WARM")


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """Tiny pretrained models for the app; the environment is restored afterwards."""
    import streamlit as st

    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    set_env(tmp_path_factory.mktemp("pretrained"), tmp_path_factory.mktemp("user_models"))
    paths = make_pretrained(Path(os.environ["GCCS_PRETRAINED_DIR"]))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield paths
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def own_weights() -> bytes:
    """gccs:mlp trained by a plain cross-entropy loop on digits, as a safetensors state_dict."""
    train = load_dataset("digits", "train")
    torch.manual_seed(0)
    net = build_arch(ARCH, 10, (1, 8, 8))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(3):
        net.train()
        for i in range(0, len(train), 64):
            opt.zero_grad()
            F.cross_entropy(net(train.x[i : i + 64]), train.y[i : i + 64]).backward()
            opt.step()
    return st_save({k: v.contiguous() for k, v in net.eval().state_dict().items()})


def _upload_script() -> None:
    """The app's real upload box, alone."""
    import streamlit as st

    from app.upload import upload_box

    upload_box()
    st.write("uploads: " + ",".join(sorted(st.session_state.get("uploads", {}))))


def _own_network_box():
    from streamlit.testing.v1 import AppTest

    from app.upload import KINDS

    at = AppTest.from_function(_upload_script, default_timeout=60)
    at.run()
    at.radio(key="upload_kind").set_value(KINDS[1]).run()
    at.selectbox(key="upload_arch").set_value(ARCH).run()
    at.selectbox(key="upload_dataset").set_value("digits").run()
    return at


def _registered(at) -> set[str]:
    return set(at.session_state["uploads"]) if "uploads" in at.session_state else set()


def test_every_hostile_weights_file_gets_one_message_and_nothing_is_registered(app_env, tmp_path):
    sentinel = tmp_path / "pwned"
    files = hostile_files(sentinel)
    assert len(files) >= 100
    at = _own_network_box()
    wrong = []
    for name, data, _ in files:
        if not name.endswith((".safetensors", ".pt", ".pth")):
            name += ".pt"  # the uploader (and the browser) only offer these extensions
        at.file_uploader(key="upload_weights").set_value((name, data, "application/octet-stream")).run()
        shown = errors(at)
        if at.exception or len(shown) != 1 or not shown[0].startswith(f"Could not use {name}: ") or _registered(at):
            wrong.append((name, [e.value for e in at.exception], shown, _registered(at)))
    assert not sentinel.exists(), "a pickle payload ran"
    assert wrong == []


def test_good_weights_register_with_their_recipe(app_env, own_weights):
    at = _own_network_box()
    at.text_input(key="upload_layer").set_value("nosuchlayer").run()
    at.file_uploader(key="upload_weights").set_value(("mine.safetensors", own_weights, None)).run()
    assert not at.exception and _registered(at) == set()
    assert "latent_layer='nosuchlayer' is not a submodule" in errors(at)[0]
    at.text_input(key="upload_layer").set_value("").run()
    assert not at.exception and not errors(at)
    (key,) = _registered(at)
    assert key.startswith("upload:") and at.session_state["upload_recipes"][key] == {
        "arch": ARCH, "latent_layer": None, "dataset": "digits"}
    assert at.session_state["uploads"][key].loss == "external"


def test_uploaded_network_is_drawn_on_the_latent_and_attack_pages(app_env, own_weights):
    from app.upload import KINDS

    at = run_app()
    at.toggle(key="show_upload").set_value(True).run()
    at.radio(key="upload_kind").set_value(KINDS[1]).run()
    at.selectbox(key="upload_arch").set_value(ARCH).run()
    at.file_uploader(key="upload_weights").set_value(("mine.safetensors", own_weights, None)).run()
    assert not at.exception and not errors(at)
    assert at.session_state["right"].startswith("upload:")
    figures = specs(at)
    assert len(figures) == 2
    assert any("class means" in " ".join(map(str, names(s))) for s in figures), [names(s) for s in figures]
    at.switch_page("app_pages/attack.py").run()
    assert not at.exception and not errors(at)
    assert specs(at)


# -- your own data (NPZ) ----------------------------------------------------------------------------------


def _npz_box():
    from streamlit.testing.v1 import AppTest

    from app.upload import KINDS

    at = AppTest.from_function(_upload_script, default_timeout=60)
    at.run()
    at.radio(key="upload_kind").set_value(KINDS[2]).run()
    return at


def test_every_hostile_npz_gets_one_message_and_is_never_offered(app_env, tmp_path):
    from test_npz import hostile_npz

    sentinel = tmp_path / "pwned"
    files = hostile_npz(sentinel)
    assert len(files) >= 100
    at = _npz_box()
    wrong = []
    for name, data, _ in files:
        at.file_uploader(key="upload_data").set_value((name, data, "application/octet-stream")).run()
        shown = errors(at)
        offered = at.session_state["uploaded_datasets"] if "uploaded_datasets" in at.session_state else []
        if at.exception or len(shown) != 1 or not shown[0].startswith(f"Could not use {name}: ") or offered:
            wrong.append((name, [e.value for e in at.exception], shown, offered))
    assert not sentinel.exists(), "a payload ran"
    assert wrong == []
    assert not list(Path(os.environ["GCCS_USER_MODELS"]).rglob("*.npz"))  # refused files are deleted


def test_uploaded_npz_trains_in_the_app_and_its_model_is_drawn(app_env):
    import io

    import numpy as np
    from sklearn.datasets import load_digits

    from app.upload import KINDS

    b = load_digits()
    buf = io.BytesIO()
    np.savez(buf, x=(b.images[:400] / 16 * 255).astype(np.uint8), y=b.target[:400],
             class_names=np.array([f"digit {i}" for i in range(10)]))
    at = run_app()
    at.toggle(key="show_upload").set_value(True).run()
    at.radio(key="upload_kind").set_value(KINDS[2]).run()
    at.file_uploader(key="upload_data").set_value(("my digits.npz", buf.getvalue(), None)).run()
    assert not at.exception and not errors(at)
    dataset = at.session_state["dataset"]
    assert dataset.endswith(".npz") and Path(dataset).name.startswith("my-digits-")
    assert dataset in at.selectbox(key="dataset").options
    at.switch_page("app_pages/train.py").run()
    assert at.session_state["tr_dataset"] == dataset
    at.text_input(key="tr_name").set_value("npz gccs")
    at.button(key="train_start").click().run()
    at = wait_training(at)  # training runs in a worker thread
    assert not at.exception and not errors(at), errors(at)
    assert any("Saved **npz-gccs**" in s.value for s in at.success)
    assert any(o.startswith("npz-gccs") for o in at.selectbox(key="left").options)
    at.switch_page("app_pages/latent.py").run()
    assert not at.exception and not errors(at)
    assert any("simplex vertices" in names(s) for s in specs(at))

"""Upload of a user's checkpoint (safetensors + GCCS metadata), or of a network of their own (an architecture
by name + a state_dict file, wrapped by ``gccs_core.weights``): size-limited, validated, session-scoped."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import streamlit as st

from app import registry, state
from app.registry import ModelEntry

MAX_UPLOAD_MB = 20
MAX_WEIGHTS_MB = 100
OWN_ARCHS = ("torchvision:resnet18", "torchvision:resnet34", "torchvision:resnet50", "torchvision:mobilenet_v3_small",
             "torchvision:vgg11", "gccs:mlp", "gccs:cnn", "gccs:resnet18")
"""Architectures offered for an own network (a static list: listing torchvision's would import torch)."""
MAX_DATA_MB = 50
KINDS = ("Checkpoint of this library", "Your own network (architecture + weights)", "Your own data (NPZ)")


def register_upload(name: str, data: bytes) -> ModelEntry:
    """Validate checkpoint bytes with the library and add the model to this session's registry.

    Raises ``ValueError`` (``CheckpointError`` included) with a message fit for the user.
    """
    from gccs_core.checkpoint import CheckpointError, load_model_bytes
    from gccs_core.data import dataset_info

    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise ValueError(f"the file is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_MB} MB.")
    model, meta = load_model_bytes(data, name)
    dataset = meta.get("dataset")
    if not isinstance(dataset, str):
        raise CheckpointError(f"{name}: the metadata does not say which dataset the model was trained on.")
    info = dataset_info(dataset)
    if dataset not in registry.available_datasets():
        raise CheckpointError(f"{name}: a valid {model.spec.loss} model for {dataset}, but {dataset} is not on disk here "
                              f"(python -m gccs_core download --dataset {dataset}).")
    if tuple(model.spec.in_shape) != tuple(info.in_shape) or model.num_classes != info.num_classes:
        raise CheckpointError(f"{name}: the model takes {model.spec.in_shape} inputs and {model.num_classes} classes, "
                              f"but {dataset} has {info.in_shape} and {info.num_classes}.")
    sha = hashlib.sha256(data).hexdigest()[:12]
    key = registry.model_key("upload", sha)
    stem = name.rsplit(".", 1)[0][:40]
    entry = ModelEntry(key, f"{stem} [{sha[:6]}]", dataset, model.spec.loss, "upload", None)
    registry.register_upload(entry, data)
    return entry


def register_weights_upload(name: str, data: bytes, arch: str, dataset: str, latent_layer: str | None = None) -> ModelEntry:
    """Build ``arch`` with the uploaded state_dict for ``dataset``, wrap it, and only then register it.

    Every check (size, dataset on disk, architecture, keys, shapes, dtypes, NaN, the latent cut) runs
    before anything is registered, so a half-loaded model never reaches the model list.
    Raises ``ValueError`` (``WeightsError`` included) with a message fit for the user.
    """
    from gccs_core.weights import load_for_dataset

    if len(data) > MAX_WEIGHTS_MB * 1024 * 1024:
        raise ValueError(f"the file is {len(data) / 2**20:.1f} MB; the limit is {MAX_WEIGHTS_MB} MB.")
    if dataset not in registry.available_datasets():
        raise ValueError(f"dataset {dataset!r} is not on disk here; allowed: {', '.join(registry.available_datasets())}.")
    layer = latent_layer or None
    load_for_dataset(arch, data, dataset, layer, source=name)  # raises on any problem; the model is rebuilt on use
    recipe = f"{arch}|{layer or ''}|{dataset}".encode()
    sha = hashlib.sha256(recipe + data).hexdigest()[:12]
    key = registry.model_key("upload", sha)
    stem = name.rsplit(".", 1)[0][:40]
    entry = ModelEntry(key, f"{stem} [{sha[:6]}]", dataset, "external", "upload", None)
    st.session_state.setdefault("upload_recipes", {})[key] = {"arch": arch, "latent_layer": layer, "dataset": dataset}
    registry.register_upload(entry, data)
    return entry


def _own_network_box(disabled: bool) -> None:
    st.caption(f"A state_dict (.safetensors, or .pt read with weights_only) of a classifier, at most {MAX_WEIGHTS_MB} MB; "
               "its logits are the scores, the latent is the input of its last linear layer unless you name one.")
    arch = st.selectbox("Architecture", OWN_ARCHS, key="upload_arch", disabled=disabled)
    dataset = st.selectbox("Dataset", registry.available_datasets(), key="upload_dataset", disabled=disabled)
    layer = st.text_input("Latent layer (optional, e.g. avgpool)", key="upload_layer", disabled=disabled).strip()
    up = st.file_uploader("Weights", type=["safetensors", "pt", "pth"], key="upload_weights", disabled=disabled,
                          max_upload_size=MAX_WEIGHTS_MB)
    entry = _register_once(up, lambda name, data: register_weights_upload(name, data, arch, dataset, layer),
                           arch, dataset, layer)
    if entry is None:
        return
    st.success(f"Loaded {entry.label} ({arch} on {dataset}); pick it in either panel.")
    state.set_pending(dataset=entry.dataset, right=entry.key)
    st.rerun()


def register_npz_upload(name: str, data: bytes) -> str:
    """Save an NPZ dataset into this session's folder, check it in full, and offer it; returns its dataset name (path).

    A file that fails any check (``gccs_core.npz``: pickled arrays, shapes, dtypes, NaN, labels, split) is
    deleted and never offered. Raises ``ValueError`` (``NPZError`` included) with a message fit for the user.
    """
    from gccs_core.data import dataset_info, load_dataset
    from gccs_core.files import atomic_write_bytes

    if len(data) > MAX_DATA_MB * 1024 * 1024:
        raise ValueError(f"the file is {len(data) / 2**20:.1f} MB; the limit is {MAX_DATA_MB} MB.")
    sha = hashlib.sha256(data).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.rsplit(".", 1)[0])[:40] or "data"
    path = registry.session_models_dir() / "data" / f"{stem}-{sha[:6]}.npz"
    atomic_write_bytes(path, data)
    try:
        dataset_info(str(path))
        for split in ("train", "test"):
            load_dataset(str(path), split)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    uploaded = st.session_state.setdefault("uploaded_datasets", [])
    if str(path) not in uploaded:
        uploaded.append(str(path))
    return str(path)


def _register_once(up: Any, register: Callable[[str, bytes], Any], *settings: str) -> Any:
    """Register an uploaded file once per upload and settings (reruns see the same file): its result, or
    None after showing one clear message (a bad file's message stays on screen across reruns)."""
    if up is None:
        return None
    marker = (up.name, up.size, up.file_id, *settings)
    if st.session_state.get("_upload_seen") == marker:
        if st.session_state.get("_upload_error"):
            st.error(st.session_state["_upload_error"])
        return None
    st.session_state["_upload_seen"] = marker
    st.session_state["_upload_error"] = None
    try:
        return register(up.name, up.getvalue())
    except (ValueError, OSError) as err:  # CheckpointError, WeightsError and NPZError are ValueErrors
        st.session_state["_upload_error"] = f"Could not use {up.name}: {err}"
        st.error(st.session_state["_upload_error"])
        return None


def _npz_box(disabled: bool) -> None:
    st.caption(f"An .npz with x (N, C, H, W) or (N, H, W), uint8 or float in [0, 1], y integer labels, optional "
               f"class_names and split; at most {MAX_DATA_MB} MB. Then train a model on it on the Train page.")
    up = st.file_uploader("Data", type=["npz"], key="upload_data", disabled=disabled, max_upload_size=MAX_DATA_MB)
    dataset = _register_once(up, register_npz_upload)
    if dataset is None:
        return
    st.success(f"Loaded {up.name}; it is in the dataset lists now (train a model on it on the Train page).")
    state.set_pending(dataset=dataset, tr_dataset=dataset)
    st.rerun()


def upload_box(disabled: bool = False) -> None:
    """The sidebar uploader: a bad file gets one clear message, never a traceback."""
    kind = st.radio("Upload", KINDS, key="upload_kind", disabled=disabled, label_visibility="collapsed")
    if kind == KINDS[1]:
        _own_network_box(disabled)
        return
    if kind == KINDS[2]:
        _npz_box(disabled)
        return
    st.caption(f"A checkpoint saved by this library (.safetensors, at most {MAX_UPLOAD_MB} MB). "
               "It stays in this browser session.")
    up = st.file_uploader("Checkpoint", type=["safetensors"], key="upload_file", disabled=disabled,
                          max_upload_size=MAX_UPLOAD_MB)
    entry = _register_once(up, register_upload)
    if entry is None:
        return
    st.success(f"Loaded {entry.label} ({entry.loss} on {entry.dataset}); pick it in either panel.")
    state.set_pending(dataset=entry.dataset, right=entry.key)
    st.rerun()

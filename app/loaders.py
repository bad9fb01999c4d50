"""Cached loaders (models, datasets, latent views, fitted projections) and the background warm-up.

The first paint must not wait for torch (seconds to import on a small machine): everything the latent
page needs for the pretrained models comes from ``pretrained/projections/*.npz`` through
``gccs_core.views`` (numpy only). Loaders that need torch import the library module that does inside
their body, and the warm-up thread imports it after the first page is drawn.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import streamlit as st
from streamlit.logger import get_logger

from app import registry
from app.registry import ModelEntry
from app.state import FAST
from gccs_core.files import file_sha256
from gccs_core.projection import LatentProjection
from gccs_core.views import (
    DECISION_METHOD,
    VIEW_SEED,
    DecisionPlane,
    LatentView,
    decision_plane,
    fit_method,
    load_view,
    projection_for_view,
    sample_indices,
    view_samples,
    with_decision_plane,
)

WARM_UP_DELAY_S = float(os.environ.get("GCCS_APP_WARM_DELAY", "5"))
"""Seconds the warm-up waits after the first run, so the browser draws the first page undisturbed
(unless a page that needs torch wakes it sooner: ``wake_warm_up``)."""
_WAKE = threading.Event()
log = get_logger("gccs_app")


# -- shipped views -------------------------------------------------------------------------------------


@st.cache_data(max_entries=16, show_spinner=False)
def _load_view(path: str, mtime: float) -> LatentView:
    return load_view(path)


@st.cache_data(max_entries=32, show_spinner=False)
def _sha_cached(path: str, mtime: float) -> str:
    return file_sha256(path)


def precomputed_view(entry: ModelEntry) -> LatentView | None:
    """The shipped view of a pretrained model, if present, readable and made from this very checkpoint."""
    if entry.source != "pretrained" or entry.path is None:
        return None
    npz = registry.pretrained_dir() / "projections" / f"{entry.name}.npz"
    if not npz.exists():
        return None
    try:
        view = _load_view(str(npz), registry.mtime(str(npz)))
    except (OSError, ValueError):  # another format version or a broken file: compute the view instead
        return None
    if view.checkpoint_sha256 != _sha_cached(entry.path, registry.mtime(entry.path)):
        return None  # stale: the checkpoint changed after the projections were made
    if len(view.idx) != view_samples(entry.dataset):
        return None
    return view


# -- models and datasets (torch, imported when first needed) ---------------------------------------------


def torch_setup() -> None:
    """Set the library's torch threads once (``$GCCS_TORCH_THREADS``, default 1); imports torch via the library."""
    from gccs_core.models import set_torch_threads

    set_torch_threads()


@st.cache_resource(max_entries=8, show_spinner=False)
def _load_model_file(path: str, mtime: float) -> Any:
    from gccs_core.checkpoint import load_model

    torch_setup()
    return load_model(path).eval()


@st.cache_resource(max_entries=4, show_spinner=False, scope="session")
def _session_model_file(path: str, mtime: float) -> Any:
    """A model trained in this session: cached with the session, released when it ends."""
    return _load_model_file.__wrapped__(path, mtime)


@st.cache_resource(max_entries=4, show_spinner=False, scope="session")
def _uploaded_model(key: str) -> Any:
    from gccs_core.checkpoint import load_model_bytes

    torch_setup()
    recipe = st.session_state.get("upload_recipes", {}).get(key)
    if recipe is not None:  # a network of the user's own, validated by app.upload.register_weights_upload
        from gccs_core.weights import load_for_dataset

        return load_for_dataset(recipe["arch"], registry.upload_bytes(key), recipe["dataset"], recipe["latent_layer"]).eval()
    model, _ = load_model_bytes(registry.upload_bytes(key), "upload")
    return model.eval()


def get_model(entry: ModelEntry) -> Any:
    """The ``LatentClassifier`` of ``entry`` in eval mode. Shared and read-only: never call ``.train()`` on it."""
    if entry.source == "upload":
        return _uploaded_model(entry.key)
    if entry.source == "user":
        return _session_model_file(entry.path, registry.mtime(entry.path))
    return _load_model_file(entry.path, registry.mtime(entry.path))


@st.cache_resource(max_entries=4, show_spinner=False)
def get_dataset(name: str) -> Any:
    """Test split of ``name`` (shared and read-only)."""
    from gccs_core.data import load_dataset

    torch_setup()
    return load_dataset(name, "test")


# -- views and projections ----------------------------------------------------------------------------


@st.cache_data(max_entries=16, show_spinner=False)
def _compute_view(key: str, dataset: str, mtime: float, n_components: int, methods: tuple[str, ...]) -> LatentView:
    from gccs_core.views import latent_view

    entry = registry.find_model(key)
    if entry is None:
        raise ValueError(f"model {key!r} is no longer available.")
    data = get_dataset(dataset)
    idx = sample_indices(data.y.numpy(), view_samples(dataset), VIEW_SEED)
    return latent_view(get_model(entry), data, methods=methods, n_components=n_components, indices=idx)


def get_view(entry: ModelEntry, method: str = "simplex", n_components: int = 2) -> LatentView:
    """Latent view of ``entry`` holding ``method``: shipped file first, else computed once and cached."""
    if n_components == 2:
        view = precomputed_view(entry)
        if view is not None and method in view.methods:
            return view
    methods = ("simplex", "pca", "lda") + (("umap",) if method == "umap" else ())
    return _compute_view(entry.key, entry.dataset, registry.mtime(entry.path), n_components, methods)


@st.cache_data(max_entries=16, show_spinner=False)
def _head(key: str, mtime: float) -> tuple[np.ndarray, np.ndarray]:
    from gccs_core.views import latent_head

    return latent_head(get_model(_entry(key)))


def _entry(key: str) -> ModelEntry:
    entry = registry.find_model(key)
    if entry is None:
        raise ValueError(f"model {key!r} is no longer available; pick another one in the sidebar.")
    return entry


def get_plane(entry: ModelEntry, y: int, t: int) -> tuple[LatentView, DecisionPlane]:
    """The decision plane of classes ``y`` and ``t`` for ``entry``, and its view with the plane as method ``decision``."""
    view = get_view(entry, "simplex")
    w, b = _head(entry.key, registry.mtime(entry.path))
    plane = decision_plane(view.z, view.y, y, t, w, b, view.prototypes)
    return with_decision_plane(view, plane), plane


def view_for(entry: ModelEntry, method: str, n_components: int = 2, pair: tuple[int, int] = (3, 8)) -> LatentView:
    """The view to draw ``method`` from: ``get_view``, or for the decision plane the view that holds it."""
    if method == DECISION_METHOD:
        return get_plane(entry, *pair)[0]
    return get_view(entry, method, n_components)


@st.cache_resource(max_entries=16, show_spinner=False)
def _fit_projection(key: str, mtime: float, method: str, n_components: int, _view: LatentView) -> LatentProjection:
    return projection_for_view(_view, method, n_components)


def get_projection(entry: ModelEntry, method: str, n_components: int = 2) -> LatentProjection:
    """A ``LatentProjection`` fitted once per model and method on the view's clean latents (UMAP included)."""
    view = get_view(entry, fit_method(method), n_components)
    return _fit_projection(entry.key, registry.mtime(entry.path), method, n_components, view)


# -- background warm-up --------------------------------------------------------------------------------


def _warm_umap(jobs: list[tuple[str, float, LatentView]]) -> None:
    t0 = time.perf_counter()
    for key, mtime, view in jobs:
        _fit_projection(key, mtime, "umap", 2, view)
    log.info("GCCS UMAP warm-up done in %.1f s", time.perf_counter() - t0)


@st.cache_resource(max_entries=8, show_spinner=False)
def _umap_thread(keys: tuple[tuple[str, float], ...], _jobs: list[tuple[str, float, LatentView]]) -> threading.Thread:
    thread = threading.Thread(target=_warm_umap, args=(_jobs,), daemon=True, name="gccs-umap-warm-up")
    thread.start()
    return thread


def warm_umap_for(entries: list[ModelEntry]) -> None:
    """Compile UMAP and fit it for these models in a background thread (once per model).

    Called as soon as UMAP is chosen: the latent page shows the shipped UMAP coordinates at once,
    and the attack page finds the fitted projection ready. Not done at start-up: importing and
    compiling UMAP adds about 0.4 GB to the server's memory, paid only by those who use it.
    """
    jobs = [(e.key, registry.mtime(e.path), get_view(e, "simplex")) for e in entries]
    _umap_thread(tuple((k, m) for k, m, _ in jobs), jobs)


def wake_warm_up() -> None:
    """Start the warm-up now instead of after its delay: called by pages that need torch (the Attack page),
    so torch, the models and the dataset load while the user reads the page, not after the first click."""
    _WAKE.set()


def _datasets_of(model_paths: list[str]) -> list[str]:
    """The datasets named in these checkpoints' headers (torch-free), in order, without repeats."""
    from gccs_core.files import read_checkpoint_header

    names: list[str] = []
    for path in model_paths:
        try:
            name = str(read_checkpoint_header(path)[1].get("dataset", ""))
        except (OSError, ValueError):
            continue
        if name and name not in names:
            names.append(name)
    return names


def _warm(model_paths: list[str], with_umap: bool) -> None:
    """Import torch, load the default models and their test split, then sklearn and UMAP, off the first paint's path.

    Ordered by what an attack click needs first; woken early by ``wake_warm_up``.
    """
    t0 = time.perf_counter()
    _WAKE.wait(WARM_UP_DELAY_S)  # let the browser draw the first page before competing for the CPU
    torch_setup()
    import gccs_core.attacks  # noqa: F401

    for path in model_paths:
        _load_model_file(path, registry.mtime(path))
    for name in _datasets_of(model_paths):
        try:
            get_dataset(name)
        except (OSError, ValueError, RuntimeError) as err:  # the page that needs it reports it
            log.info("GCCS warm-up could not load %s: %s", name, err)
    import sklearn.decomposition  # noqa: F401

    import gccs_core.evaluate  # noqa: F401

    if with_umap:
        rng = np.random.default_rng(0)
        LatentProjection("umap", n_epochs=20).fit(rng.standard_normal((60, 8))).transform(rng.standard_normal((5, 8)))
    log.info("GCCS warm-up done in %.1f s (umap=%s)", time.perf_counter() - t0, with_umap)


@st.cache_resource(show_spinner=False)
def start_warm_up(model_paths: tuple[str, ...]) -> threading.Thread:
    """Start the warm-up thread once per server process."""
    with_umap = not FAST and os.environ.get("GCCS_APP_WARM_UMAP", "0") == "1"
    if os.environ.get("GCCS_APP_WARM", "1") == "0":
        model_paths, with_umap = (), False
    thread = threading.Thread(target=_warm, args=(list(model_paths), with_umap), daemon=True, name="gccs-warm-up")
    thread.start()
    return thread

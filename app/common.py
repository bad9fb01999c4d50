"""Shared plumbing of the app: paths, the model registry, cached loaders, URL state, teacher mode.

The first paint must not wait for torch (3 s to import on a small machine): everything the latent
page needs for the pretrained models comes from ``pretrained/projections/*.npz`` through numpy
only. Functions that need torch import ``gccs_core`` inside their body.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from streamlit.logger import get_logger

ROOT = Path(__file__).resolve().parent.parent
WARM_UP_DELAY_S = float(os.environ.get("GCCS_APP_WARM_DELAY", "5"))
"""Seconds the warm-up waits after the first run, so the browser draws the first page undisturbed."""
_log = get_logger("gccs_app")
FAST = os.environ.get("GCCS_APP_FAST", "") == "1"
"""Tiny sizes for tests (fewer samples, no UMAP warm-up)."""

OFFLINE_DATASETS = ("digits", "mnist5k")
TORCHVISION_FILES = {  # dataset -> a path under the torchvision root that exists once it is on disk
    "mnist": "MNIST/raw/t10k-images-idx3-ubyte",
    "fashion-mnist": "FashionMNIST/raw/t10k-images-idx3-ubyte",
    "cifar10": "cifar-10-batches-py/test_batch",
    "cifar100": "cifar-100-python/test",
    "svhn": "test_32x32.mat",
}
VIEW_SAMPLES = {"digits": 360, "mnist5k": 500}
"""Samples plotted per dataset (the same ones in both panels and in the precomputed files)."""
DEFAULT_VIEW_SAMPLES = 500
VIEW_SEED = 0
MAX_UPLOAD_MB = 20
METHOD_LABELS = {"simplex": "Simplex view (exact)", "pca": "PCA", "lda": "LDA", "umap": "UMAP (approximate)"}


def pretrained_dir() -> Path:
    """Folder of the pretrained models: ``$GCCS_PRETRAINED_DIR`` or ``<repo>/pretrained``."""
    return Path(os.environ.get("GCCS_PRETRAINED_DIR", ROOT / "pretrained"))


def user_models_dir() -> Path:
    """Folder where models trained in the app are saved: ``$GCCS_USER_MODELS`` or ``<repo>/user_models``."""
    return Path(os.environ.get("GCCS_USER_MODELS", ROOT / "user_models"))


def session_models_dir() -> Path:
    """This browser session's own folder under ``user_models_dir()``: no session sees another's trained models."""
    owner = st.session_state.setdefault("_models_owner", uuid.uuid4().hex[:12])
    return user_models_dir() / owner


def data_root() -> Path:
    return Path(os.environ.get("GCCS_DATA", Path.home() / ".cache" / "gccs" / "data"))


def available_datasets() -> list[str]:
    """digits and mnist5k always; torchvision datasets only when their files are on disk."""
    root = data_root()
    return list(OFFLINE_DATASETS) + [name for name, rel in TORCHVISION_FILES.items() if (root / rel).exists()]


def view_samples(dataset: str) -> int:
    return VIEW_SAMPLES.get(dataset, DEFAULT_VIEW_SAMPLES)


# -- model registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """One model the user can pick: pretrained, trained in the app, or uploaded (this session only)."""

    key: str  # "pretrained:<name>", "user:<name>", "upload:<sha12>"
    name: str
    dataset: str
    loss: str
    source: str
    path: str | None  # checkpoint file (None for uploads)

    @property
    def label(self) -> str:
        tag = {"pretrained": "", "user": " (trained here)", "upload": " (uploaded)"}[self.source]
        return f"{self.name}{tag}"


def read_header_metadata(path: Path) -> dict[str, Any]:
    """The GCCS metadata of a safetensors checkpoint, read from its JSON header only (no torch)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > 1024 * 1024:
            raise ValueError(f"{path}: header too large")
        header = json.loads(fh.read(n))
    return json.loads(header.get("__metadata__", {}).get("metadata", "{}"))


def _entry_from_file(path: Path, source: str, name: str) -> ModelEntry | None:
    try:
        meta = read_header_metadata(path)
        spec = meta.get("spec", {})
        return ModelEntry(f"{source}:{name}", name, str(meta.get("dataset", "")), str(spec.get("loss", "?")), source, str(path))
    except (OSError, ValueError, struct.error):
        return None  # a half-written or foreign file is simply not offered


@st.cache_data(ttl=5, max_entries=32, show_spinner=False)
def _scan_models(pretrained: str, user: str) -> list[ModelEntry]:
    entries = []
    for path in sorted(Path(pretrained).glob("*.safetensors")):
        e = _entry_from_file(path, "pretrained", path.stem)
        if e:
            entries.append(e)
    for path in sorted(Path(user).glob("*/model.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True):
        e = _entry_from_file(path, "user", path.parent.name)
        if e:  # the key names the session's folder too: global caches keyed on it never mix two sessions' models
            entries.append(replace(e, key=f"user:{Path(user).name}/{e.name}"))
    return entries


def list_models(dataset: str | None = None) -> list[ModelEntry]:
    """Every model on offer (for ``dataset`` if given): pretrained first, then user models, then uploads."""
    entries = list(_scan_models(str(pretrained_dir()), str(session_models_dir())))
    entries += list(st.session_state.get("uploads", {}).values())
    return [e for e in entries if dataset is None or e.dataset == dataset]


def find_model(key: str) -> ModelEntry | None:
    return next((e for e in list_models() if e.key == key), None)


def default_pair(models: list[ModelEntry]) -> tuple[str | None, str | None]:
    """Default panels: a GCCS model on the left and a cross-entropy model on the right."""
    def first(loss: str) -> str | None:
        return next((e.key for e in models if e.loss == loss), None)

    left = first("gccs") or (models[0].key if models else None)
    right = first("ce") or next((e.key for e in models if e.key != left), left)
    return left, right


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mtime(path: str | None) -> float:
    return os.path.getmtime(path) if path and os.path.exists(path) else 0.0


# -- cached loaders ------------------------------------------------------------------------------


@st.cache_data(max_entries=16, show_spinner=False)
def _load_npz(path: str, mtime: float) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        return {key.replace("__", "/"): data[key] for key in data.files}


def precomputed_view(entry: ModelEntry) -> dict[str, Any] | None:
    """The shipped view of a pretrained model, if present and made from this very checkpoint."""
    if entry.source != "pretrained" or entry.path is None:
        return None
    npz = pretrained_dir() / "projections" / f"{entry.name}.npz"
    if not npz.exists():
        return None
    view = _load_npz(str(npz), _mtime(str(npz)))
    if str(view.get("checkpoint_sha256", "")) != _sha_cached(entry.path, _mtime(entry.path)):
        return None  # stale: the checkpoint changed after the projections were made
    if len(view["idx"]) != view_samples(entry.dataset):
        return None
    return view


@st.cache_data(max_entries=32, show_spinner=False)
def _sha_cached(path: str, mtime: float) -> str:
    return file_sha256(path)


def torch_setup() -> None:
    """Import torch once with ``$GCCS_TORCH_THREADS`` (default 1) intra-op threads.

    On a small shared machine more threads spin against each other: a 100-sample PGD took 6.7 s
    with 2 threads under load and 0.08 s with 1.
    """
    import torch

    threads = int(os.environ.get("GCCS_TORCH_THREADS", "1"))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@st.cache_resource(max_entries=8, show_spinner=False)
def _load_model_file(path: str, mtime: float) -> Any:
    from gccs_core import load_model

    torch_setup()
    model = load_model(path)
    model.eval()
    return model


def get_model(entry: ModelEntry) -> Any:
    """The model of ``entry`` in eval mode. Shared and read-only: never call ``.train()`` on it."""
    if entry.source == "upload":
        return _uploaded_model(entry.key)
    if entry.source == "user":
        return _session_model_file(entry.path, _mtime(entry.path))
    return _load_model_file(entry.path, _mtime(entry.path))


@st.cache_resource(max_entries=4, show_spinner=False, scope="session")
def _session_model_file(path: str, mtime: float) -> Any:
    """A model trained in this session: cached with the session, released when it ends."""
    return _load_model_file.__wrapped__(path, mtime)


@st.cache_resource(max_entries=4, show_spinner=False, scope="session")
def _uploaded_model(key: str) -> Any:
    from gccs_core.checkpoint import load_model_bytes

    torch_setup()
    data = st.session_state["upload_bytes"][key]
    model, _ = load_model_bytes(data, "upload")
    return model.eval()


@st.cache_resource(max_entries=4, show_spinner=False)
def get_dataset(name: str) -> Any:
    """Test split of ``name`` (tensors; shared and read-only)."""
    from gccs_core import load_dataset

    torch_setup()
    return load_dataset(name, "test")


@st.cache_data(max_entries=16, show_spinner=False)
def _compute_view(key: str, dataset: str, mtime: float, n_components: int, methods: tuple[str, ...]) -> dict[str, Any]:
    from gccs_core.projection import latent_view, sample_indices

    entry = find_model(key)
    model = get_model(entry)
    data = get_dataset(dataset)
    idx = sample_indices(data.y.numpy(), view_samples(dataset), VIEW_SEED)
    return latent_view(model, data, methods=methods, n_components=n_components, indices=idx)


def get_view(entry: ModelEntry, method: str = "simplex", n_components: int = 2) -> dict[str, Any]:
    """Latent view of ``entry`` holding ``method``: shipped file first, else computed once and cached."""
    if n_components == 2:
        view = precomputed_view(entry)
        if view is not None and method in [str(m) for m in view["methods"]]:
            return view
    methods = ("simplex", "pca", "lda") + (("umap",) if method == "umap" else ())
    return _compute_view(entry.key, entry.dataset, _mtime(entry.path), n_components, methods)


@st.cache_resource(max_entries=16, show_spinner=False)
def _fit_projection(key: str, mtime: float, method: str, n_components: int, _view: dict[str, Any]) -> Any:
    from gccs_core.projection import projection_for_view

    return projection_for_view(_view, method, n_components)


def get_projection(entry: ModelEntry, method: str, n_components: int = 2) -> Any:
    """A ``LatentProjection`` fitted once per model and method on the view's clean latents (UMAP included)."""
    view = get_view(entry, "simplex" if method == "umap" else method, n_components)
    return _fit_projection(entry.key, _mtime(entry.path), method, n_components, view)


def _warm_umap(jobs: list[tuple[str, float, dict[str, Any]]]) -> None:
    t0 = time.perf_counter()
    for key, mtime, view in jobs:
        _fit_projection(key, mtime, "umap", 2, view)
    _log.info("GCCS UMAP warm-up done in %.1f s", time.perf_counter() - t0)


@st.cache_resource(max_entries=8, show_spinner=False)
def _umap_thread(keys: tuple[tuple[str, float], ...], _jobs: list[tuple[str, float, dict[str, Any]]]) -> threading.Thread:
    thread = threading.Thread(target=_warm_umap, args=(_jobs,), daemon=True, name="gccs-umap-warm-up")
    thread.start()
    return thread


def warm_umap_for(entries: list[ModelEntry]) -> None:
    """Compile UMAP and fit it for these models in a background thread (once per model).

    Called as soon as UMAP is chosen: the latent page shows the shipped UMAP coordinates at once,
    and the attack page finds the fitted projection ready. Not done at start-up: importing and
    compiling UMAP adds about 0.4 GB to the server's memory, paid only by those who use it.
    """
    jobs = [(e.key, _mtime(e.path), get_view(e, "simplex")) for e in entries]
    _umap_thread(tuple((k, m) for k, m, _ in jobs), jobs)


# -- background warm-up --------------------------------------------------------------------------


def _warm(model_paths: list[str], with_umap: bool) -> None:
    """Import torch/sklearn, load the default models and compile UMAP, off the first paint's path."""
    t0 = time.perf_counter()
    time.sleep(WARM_UP_DELAY_S)  # let the browser draw the first page before competing for the CPU
    import sklearn.decomposition  # noqa: F401
    torch_setup()
    import gccs_core.attacks  # noqa: F401
    import gccs_core.projection  # noqa: F401

    for path in model_paths:
        _load_model_file(path, _mtime(path))
    if with_umap:
        from gccs_core.projection import LatentProjection

        rng = np.random.default_rng(0)
        LatentProjection("umap", n_epochs=20).fit(rng.standard_normal((60, 8))).transform(rng.standard_normal((5, 8)))
    _log.info("GCCS warm-up done in %.1f s (umap=%s)", time.perf_counter() - t0, with_umap)


@st.cache_resource(show_spinner=False)
def start_warm_up(model_paths: tuple[str, ...]) -> threading.Thread:
    """Start the warm-up thread once per server process."""
    with_umap = not FAST and os.environ.get("GCCS_APP_WARM_UMAP", "0") == "1"
    if os.environ.get("GCCS_APP_WARM", "1") == "0":
        model_paths, with_umap = (), False
    thread = threading.Thread(target=_warm, args=(list(model_paths), with_umap), daemon=True, name="gccs-warm-up")
    thread.start()
    return thread


# -- URL state, teacher mode -------------------------------------------------------------------------

URL_KEYS = ("dataset", "left", "right", "method", "dim", "teacher", "attack", "eps", "steps", "objective",
            "target", "samples", "sample_class", "n_samples")
"""Session-state keys mirrored in the URL query string, so a teacher can share a view."""


def state_from_url() -> None:
    """Seed session state from the query string (only keys not set yet in this session)."""
    if st.session_state.get("_url_loaded"):
        return
    st.session_state["_url_loaded"] = True
    for key in URL_KEYS:
        if key in st.query_params and key not in st.session_state:
            value: Any = st.query_params[key]
            if key in ("eps",):
                try:
                    value = float(value)
                except ValueError:
                    continue
            elif key in ("steps", "dim", "target", "sample_class", "n_samples"):
                try:
                    value = int(value)
                except ValueError:
                    continue
            elif key == "teacher":
                value = value in ("1", "true", "True")
            st.session_state[key] = value


def state_to_url() -> None:
    """Write the current values of ``URL_KEYS`` into the query string."""
    for key in URL_KEYS:
        if key in st.session_state and st.session_state[key] is not None:
            value = st.session_state[key]
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            if st.query_params.get(key) != text:
                st.query_params[key] = text


def set_pending(**values: Any) -> None:
    """Change widget-backed state on the next run (a widget's key cannot change after it is drawn)."""
    st.session_state.setdefault("_pending", {}).update(values)


def apply_pending() -> None:
    """Apply ``set_pending`` values; call before any widget is drawn."""
    for key, value in st.session_state.pop("_pending", {}).items():
        st.session_state[key] = value


PERSISTENT_PREFIXES = ("tr_",)


def keep_state() -> None:
    """Keep widget values across pages: Streamlit drops the state of a widget that a run does not draw
    (another page, or the hidden sidebar in teacher mode); re-assigning detaches it from that clean-up."""
    for key in list(st.session_state.keys()):
        if key in URL_KEYS or key.startswith(PERSISTENT_PREFIXES):
            st.session_state[key] = st.session_state[key]


def teacher() -> bool:
    return bool(st.session_state.get("teacher", False))


def plot_height() -> int:
    return 720 if teacher() else 520


def controls(label: str = "Controls") -> Any:
    """Container for a page's controls: folded away in teacher mode."""
    return st.expander(label, expanded=False) if teacher() else st.container()


def show_error(err: BaseException, what: str) -> None:
    """A clear one-line message instead of a traceback."""
    st.error(f"{what}: {err}")

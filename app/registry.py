"""The models and datasets on offer: folders, the model registry and the one format of model keys.

Everything here reads file headers and folders only (``gccs_core.files``, ``gccs_core.data``): no
model is loaded, so the sidebar is drawn before torch is imported.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from gccs_core.data import DATASETS, dataset_info, default_data_root, torchvision_files
from gccs_core.files import read_checkpoint_header

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pretrained", "user", "upload")
SOURCE_TAGS = {"pretrained": "", "user": " (trained here)", "upload": " (uploaded)"}


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


def available_datasets() -> list[str]:
    """Offline datasets always; torchvision datasets only when their test files are on disk; then this
    session's uploaded NPZ files (their paths, see ``app.upload.register_npz_upload``)."""
    root = default_data_root()
    names = [name for name, info in DATASETS.items()
             if info.offline or all(p.exists() for p in torchvision_files(name, "test", root))]
    return names + [p for p in st.session_state.get("uploaded_datasets", []) if os.path.exists(p)]


def num_classes(dataset: str) -> int:
    return dataset_info(dataset).num_classes  # an NPZ path too


def mtime(path: str | None) -> float:
    """Modification time of ``path`` (0 if absent): part of every cache key, so a rewritten file is reloaded."""
    return os.path.getmtime(path) if path and os.path.exists(path) else 0.0


def model_key(source: str, name: str, folder: str | None = None) -> str:
    """The key of a model: ``pretrained:<name>``, ``user:<session folder>/<name>`` or ``upload:<sha12>``.

    A user model's key names its session's folder, so global caches keyed on it never mix two sessions' models.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r} is unknown; allowed: {', '.join(SOURCES)}.")
    return f"{source}:{folder}/{name}" if source == "user" else f"{source}:{name}"


def user_model_key(run_dir: Path) -> str:
    """The key of the model trained into ``run_dir`` (``<session folder>/<run name>``)."""
    return model_key("user", run_dir.name, run_dir.parent.name)


@dataclass(frozen=True)
class ModelEntry:
    """One model the user can pick: pretrained, trained in the app, or uploaded (this session only)."""

    key: str
    name: str
    dataset: str
    loss: str
    source: str
    path: str | None  # checkpoint file (None for uploads)

    @property
    def label(self) -> str:
        return f"{self.name}{SOURCE_TAGS[self.source]}"


def _entry_from_file(path: Path, source: str, name: str, folder: str | None = None) -> ModelEntry | None:
    try:
        kind, meta = read_checkpoint_header(path)
    except (OSError, ValueError):  # CheckpointError is a ValueError: a half-written or foreign file is not offered
        return None
    if kind != "model":
        return None
    spec = meta.get("spec", {})
    loss = str(spec.get("loss", "?")) if isinstance(spec, dict) else "?"
    return ModelEntry(model_key(source, name, folder), name, str(meta.get("dataset", "")), loss, source, str(path))


@st.cache_data(ttl=5, max_entries=32, show_spinner=False)
def _scan_models(pretrained: str, user: str) -> list[ModelEntry]:
    entries = [_entry_from_file(p, "pretrained", p.stem) for p in sorted(Path(pretrained).glob("*.safetensors"))]
    runs = sorted(Path(user).glob("*/model.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    entries += [_entry_from_file(p, "user", p.parent.name, Path(user).name) for p in runs]
    return [e for e in entries if e is not None]


def refresh() -> None:
    """Forget the cached folder scan (a model was just saved)."""
    _scan_models.clear()


def register_upload(entry: ModelEntry, data: bytes) -> None:
    """Offer an uploaded model in this session only (its bytes stay in the session)."""
    st.session_state.setdefault("upload_bytes", {})[entry.key] = data
    st.session_state.setdefault("uploads", {})[entry.key] = entry


def upload_bytes(key: str) -> bytes:
    return st.session_state["upload_bytes"][key]


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

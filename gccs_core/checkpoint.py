"""Checkpoints: safetensors weights plus JSON metadata in the same file, written atomically.

File layout (one ``.safetensors`` file, no pickle anywhere):

* tensors: the model's ``state_dict`` (a *model* file), or ``model/<key>`` and ``optim/<id>/<key>``
  (a *training* file, used by ``--resume``);
* header metadata: ``{"format": "gccs-checkpoint", "format_version": "1", "kind": "model"|"training",
  "metadata": <JSON>}``. The JSON holds the model spec, dataset, class names, training config,
  metrics, seed, training time and library version.

Every run folder also gets a human-readable ``metadata.json`` copy (never needed for loading).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ._version import __version__
from .files import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, checkpoint_info, parse_safetensors_header
from .files import MAX_HEADER_BYTES as MAX_HEADER_BYTES  # re-exported: the bounds of a checkpoint file
from .files import CheckpointError as CheckpointError
from .files import atomic_write_bytes as atomic_write_bytes
from .models import LatentClassifier, ModelSpec, build_model

FORMAT = CHECKPOINT_FORMAT
FORMAT_VERSION = CHECKPOINT_FORMAT_VERSION
MODEL_FILE = "model.safetensors"
TRAINING_FILE = "checkpoint.safetensors"
METADATA_FILE = "metadata.json"
MAX_CHECKPOINT_BYTES = 200 * 1024 * 1024
SPEC_FIELDS = ("encoder", "in_shape", "num_classes", "latent_dim", "loss", "loss_params", "mean", "std")


# -- writing ---------------------------------------------------------------------------------


def _header(kind: str, metadata: dict[str, Any]) -> dict[str, str]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "metadata": json.dumps(metadata)}


def _cpu_contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def model_metadata(model: LatentClassifier, **extra: Any) -> dict[str, Any]:
    """Metadata for a model file: its spec plus whatever the caller records (dataset, metrics ...)."""
    return {"library_version": __version__, "spec": model.spec.to_dict(), **extra}


def save_model(model: LatentClassifier, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Save a model file (weights + metadata) atomically; returns the path written."""
    meta = model_metadata(model, **(metadata or {}))
    data = st_save(_cpu_contiguous(model.state_dict()), metadata=_header("model", meta))
    atomic_write_bytes(path, data)
    return Path(path)


def save_training_checkpoint(
    path: str | os.PathLike,
    model: LatentClassifier,
    optimizer: torch.optim.Optimizer,
    metadata: dict[str, Any],
) -> Path:
    """Save model + optimizer state + metadata (epoch, history, config) in one atomic file.

    Also deletes the temporary files that a killed run left half-written in the same run folder.
    """
    for name in (MODEL_FILE, TRAINING_FILE, METADATA_FILE):  # from atomic_write_bytes, never os.replace'd
        for stale in Path(path).parent.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    meta = model_metadata(model, **metadata)
    meta["optimizer"] = {"param_groups": opt["param_groups"], "scalars": scalars}
    atomic_write_bytes(path, st_save(_cpu_contiguous(tensors), metadata=_header("training", meta)))
    return Path(path)


# -- reading ---------------------------------------------------------------------------------


def read_checkpoint_bytes(data: bytes, source: str = "checkpoint") -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Parse and validate a checkpoint held in memory: returns (kind, metadata, tensors).

    Never unpickles; every failure is a ``CheckpointError`` that says what is wrong.
    """
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{source}: {len(data)} bytes is over the {MAX_CHECKPOINT_BYTES}-byte limit.")
    header = parse_safetensors_header(data, len(data), source)
    kind, meta = checkpoint_info(header.get("__metadata__"), source)
    try:
        tensors = st_load(data)
    except Exception as err:  # safetensors raises its own error types for every malformed layout
        raise CheckpointError(f"{source}: tensor data is malformed ({err}).") from err
    return kind, meta, tensors


def spec_from_metadata(meta: dict[str, Any], source: str = "checkpoint") -> ModelSpec:
    """Rebuild and validate the ``ModelSpec`` stored in checkpoint metadata."""
    spec = meta.get("spec")
    if not isinstance(spec, dict):
        raise CheckpointError(f"{source}: metadata has no 'spec' object describing the model.")
    missing = [f for f in SPEC_FIELDS if f not in spec]
    if missing:
        raise CheckpointError(f"{source}: model spec lacks field(s) {', '.join(missing)}.")
    types = {"encoder": str, "loss": str, "num_classes": int, "latent_dim": int, "loss_params": dict,
             "in_shape": list, "mean": list, "std": list}
    for name, typ in types.items():
        if not isinstance(spec[name], typ) or isinstance(spec[name], bool):
            raise CheckpointError(f"{source}: spec field {name}={spec[name]!r} should be of type {typ.__name__}.")
    for name in ("in_shape", "mean", "std"):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e30 for v in spec[name]):
            raise CheckpointError(f"{source}: spec field {name}={spec[name]!r} must be a list of finite numbers.")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec["loss_params"].values()):
        raise CheckpointError(f"{source}: loss_params={spec['loss_params']!r} must map names to numbers.")
    if spec["num_classes"] > 1000 or spec["latent_dim"] > 4096 or any(v > 1024 for v in spec["in_shape"]):
        raise CheckpointError(f"{source}: spec sizes are implausibly large ({spec}); refusing to build.")
    try:
        return ModelSpec(**{f: spec[f] for f in SPEC_FIELDS})
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{source}: invalid model spec: {err}") from err


def _build_and_fill(spec: ModelSpec, state: dict[str, torch.Tensor], source: str) -> LatentClassifier:
    try:
        with torch.device("meta"):  # shapes only: a tiny hostile spec cannot make us allocate a huge model
            model = build_model(spec)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{source}: cannot build the model its metadata describes: {err}") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the {spec.encoder}/{spec.loss} model: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}."
        )
    for key, ref in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(ref.shape) or got.dtype != ref.dtype:
            raise CheckpointError(
                f"{source}: tensor {key!r} is {got.dtype} {tuple(got.shape)}; the model needs {ref.dtype} {tuple(ref.shape)}."
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise CheckpointError(f"{source}: tensor {key!r} contains NaN or inf values.")
    model = build_model(spec)  # now known to be no bigger than the file's own tensors
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The model file that ``path`` names: the file itself, or ``model.safetensors`` in a run folder."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (expected a .safetensors file or a run folder).")
    return p


def load_model_bytes(data: bytes, source: str = "upload") -> tuple[LatentClassifier, dict[str, Any]]:
    """Load a model (eval mode) and its metadata from checkpoint bytes, e.g. an upload."""
    kind, meta, tensors = read_checkpoint_bytes(data, source)
    if kind == "training":
        tensors = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    spec = spec_from_metadata(meta, source)
    return _build_and_fill(spec, tensors, source), meta


def load_model_with_metadata(path: str | os.PathLike) -> tuple[LatentClassifier, dict[str, Any]]:
    """Load a model saved by this library (a ``.safetensors`` file or a run folder), in eval mode, and its metadata."""
    p = resolve_checkpoint(path)
    size = p.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{p}: {size} bytes is over the {MAX_CHECKPOINT_BYTES}-byte limit.")
    return load_model_bytes(p.read_bytes(), str(p))


def load_model(
    path: str | os.PathLike, with_metadata: bool = False
) -> LatentClassifier | tuple[LatentClassifier, dict[str, Any]]:
    """Load a model saved by this library (a ``.safetensors`` file or a run folder), in eval mode.

    ``with_metadata=True`` (kept for old callers) returns ``(model, metadata)``: prefer
    ``load_model_with_metadata``, whose return type does not depend on a flag.
    """
    model, meta = load_model_with_metadata(path)
    return (model, meta) if with_metadata else model


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a checkpoint without building the model."""
    p = resolve_checkpoint(path)
    return read_checkpoint_bytes(p.read_bytes(), str(p))[1]


def load_training_checkpoint(
    path: str | os.PathLike, model: LatentClassifier, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model and optimizer state in place from a training checkpoint; returns its metadata."""
    p = Path(path)
    kind, meta, tensors = read_checkpoint_bytes(p.read_bytes(), str(p))
    if kind != "training":
        raise CheckpointError(f"{p}: a {kind} file, not a training checkpoint; cannot resume from it.")
    state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    filled = _build_and_fill(spec_from_metadata(meta, str(p)), state, str(p))
    model.load_state_dict(filled.state_dict(), strict=True)
    opt_meta = meta.get("optimizer", {})
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, pid, name = key.split("/", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    for pid, scalars in opt_meta.get("scalars", {}).items():
        opt_state.setdefault(int(pid), {}).update(scalars)
    optimizer.load_state_dict({"state": opt_state, "param_groups": opt_meta["param_groups"]})
    return meta


def write_metadata_json(folder: str | os.PathLike, metadata: dict[str, Any]) -> None:
    """Human-readable copy of a run's metadata (informational; loading never reads it)."""
    atomic_write_bytes(Path(folder) / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True).encode())

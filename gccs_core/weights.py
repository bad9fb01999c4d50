"""Architectures by name plus weights from a file, loaded without running any code from the file.

Architectures (``ARCH`` strings):

* ``torchvision:<name>``: a torchvision classification model (``torchvision.models.list_models``)
  built with ``weights=None`` and ``num_classes=K``; when the inputs do not have 3 channels, the
  first ``nn.Conv2d`` (in registration order: ``conv1`` of a ResNet, ``features.0`` of a VGG) is
  rebuilt with ``in_channels=C``, nothing else changes;
* ``gccs:<encoder>``: one of the library's encoders (``mlp``, ``cnn``, ``resnet18``) with its output
  size set to K, so it returns logits.

Weights: a ``state_dict`` saved as safetensors (``safetensors.torch.save_file``) or as a ``.pt``
file read by ``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors and plain
containers only, never a pickled module or any other object). The format is recognised from the
file's first bytes, not its name. ``{"state_dict": {...}}`` / ``{"model": {...}}`` wrappers and a
``module.`` prefix on every key (DataParallel) are accepted. Before any real allocation the
architecture is built on the meta device and every key, shape and dtype is compared; every tensor is
checked for NaN/inf. Every failure is a ``WeightsError`` with one line that says what is wrong.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import MAX_HEADER_BYTES, CheckpointError

MAX_WEIGHTS_BYTES = 512 * 1024 * 1024
MAX_TENSORS = 10_000
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_BYTE = 0x80


class WeightsError(CheckpointError):
    """A weights file (or architecture name) cannot be used: wrong, truncated, foreign or hostile."""


# -- architectures ----------------------------------------------------------------------------------


def torchvision_archs() -> list[str]:
    """The torchvision classification models, as ``torchvision:<name>``."""
    import torchvision

    return [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]


def library_archs() -> list[str]:
    from .models import ENCODERS

    return [f"gccs:{n}" for n in ENCODERS]


def _first_conv(module: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    return None


def _adapt_channels(net: nn.Module, channels: int) -> None:
    found = _first_conv(net)
    if found is None or found[1].in_channels == channels:
        return
    name, conv = found
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
                    conv.groups if conv.groups == 1 else channels, conv.bias is not None, conv.padding_mode,
                    device=conv.weight.device)
    parent, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, new)


def build_arch(arch: str, num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    """An untrained network (inputs -> logits) for ``arch``; see the module docstring for the names."""
    from .models import ENCODERS

    if not isinstance(arch, str) or ":" not in arch:
        raise WeightsError(f"arch={arch!r} is unknown; use torchvision:<model> (e.g. torchvision:resnet18) or "
                           f"gccs:<encoder> ({', '.join(ENCODERS)}).")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 100_000:
        raise WeightsError(f"num_classes={num_classes!r} is invalid: it must be an integer from 2 to 100000.")
    if not (isinstance(in_shape, (tuple, list)) and len(in_shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in in_shape)):
        raise WeightsError(f"in_shape={in_shape!r} is invalid: give (C, H, W) with sizes from 1 to 4096.")
    in_shape = tuple(in_shape)  # type: ignore[assignment]
    family, _, name = arch.partition(":")
    if family == "gccs":
        if name not in ENCODERS:
            raise WeightsError(f"arch={arch!r} is unknown; the library's encoders are {', '.join(library_archs())}.")
        return ENCODERS[name](in_shape, num_classes)
    if family == "torchvision":
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        if name not in names:
            from difflib import get_close_matches

            close = get_close_matches(name, names, n=4) or names[:6]
            raise WeightsError(f"arch={arch!r} is not a torchvision classification model; e.g. "
                               f"{', '.join('torchvision:' + c for c in close)}.")
        try:
            net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except (TypeError, ValueError) as err:
            raise WeightsError(f"arch={arch!r} cannot be built with num_classes={num_classes}: {err}") from err
        _adapt_channels(net, in_shape[0])
        return net
    raise WeightsError(f"arch={arch!r}: unknown family {family!r}; allowed: torchvision, gccs.")


# -- reading state_dicts --------------------------------------------------------------------------


def _read_safetensors(data: bytes, source: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as st_load

    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or n > len(data) - 8:
        raise WeightsError(f"{source}: safetensors header declares {n} bytes but the file holds {len(data) - 8} after "
                           f"the length field (limit {MAX_HEADER_BYTES}); the file is truncated or not safetensors.")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise WeightsError(f"{source}: safetensors header is not valid JSON ({type(err).__name__}).") from err
    if not isinstance(header, dict):
        raise WeightsError(f"{source}: safetensors header is a JSON {type(header).__name__}, not an object.")
    if len(header) > MAX_TENSORS:
        raise WeightsError(f"{source}: {len(header)} entries in the header; at most {MAX_TENSORS} tensors are allowed.")
    try:
        return st_load(data)
    except Exception as err:  # safetensors raises its own error types for every malformed layout
        raise WeightsError(f"{source}: safetensors tensor data is malformed ({str(err).splitlines()[0][:200]}).") from err


def _read_torch(data: bytes, source: str) -> Any:
    import pickle

    if data[:4] == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                total = sum(i.file_size for i in zf.infolist())
                bad = zf.testzip()
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
            raise WeightsError(f"{source}: a zip (torch.save) file that is truncated or corrupt ({err}).") from err
        if bad is not None:
            raise WeightsError(f"{source}: member {bad!r} of the torch.save archive is corrupt (CRC mismatch).")
        if total > MAX_WEIGHTS_BYTES:
            raise WeightsError(f"{source}: the archive unpacks to {total} bytes, over the {MAX_WEIGHTS_BYTES}-byte limit.")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols; our one-line error says enough
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"the Python object {found.group(1)}" if found else "objects other than tensors and plain containers"
        raise WeightsError(
            f"{source}: refused by torch.load(weights_only=True): the pickle references {what}; a weights file "
            "must hold only a state_dict (save model.state_dict(), never the model object)."
        ) from err
    except Exception as err:  # truncated or corrupt archives raise RuntimeError, EOFError, KeyError ...
        raise WeightsError(f"{source}: not a readable torch.save file ({type(err).__name__}: "
                           f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else 'no detail'}).") from err


def _as_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and len(obj) == 1:
        (key, inner), = obj.items()
        if key in ("state_dict", "model", "model_state_dict") and isinstance(inner, dict):
            obj = inner
    if not isinstance(obj, dict):
        raise WeightsError(f"{source}: holds a {type(obj).__name__}, not a state_dict (a dict of parameter name -> tensor).")
    if len(obj) > MAX_TENSORS:
        raise WeightsError(f"{source}: {len(obj)} entries; at most {MAX_TENSORS} tensors are allowed.")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightsError(f"{source}: key {key!r} is a {type(key).__name__}; state_dict keys are parameter names (str).")
        if not torch.is_tensor(value):
            raise WeightsError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a state_dict.")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def read_state_dict_bytes(data: bytes, source: str = "weights") -> dict[str, torch.Tensor]:
    """A state_dict from file bytes (safetensors or torch.save), validated as a dict of str -> tensor."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WeightsError(f"{source}: expected the file's bytes, got {type(data).__name__}.")
    data = bytes(data)
    if len(data) > MAX_WEIGHTS_BYTES:
        raise WeightsError(f"{source}: {len(data)} bytes is over the {MAX_WEIGHTS_BYTES}-byte limit.")
    if len(data) < 8:
        raise WeightsError(f"{source}: file is {len(data)} bytes, too short to hold weights.")
    if data[8:9] == b"{" and data[:4] != ZIP_MAGIC:  # safetensors: 8-byte header length, then a JSON object
        return _as_state_dict(_read_safetensors(data, source), source)
    if data[:4] == ZIP_MAGIC or data[0] == PICKLE_PROTOCOL_BYTE:
        return _as_state_dict(_read_torch(data, source), source)
    raise WeightsError(f"{source}: neither a safetensors file nor a torch.save state_dict (first bytes {data[:8]!r}).")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.safetensors`` or ``.pt``/``.pth`` file; see ``read_state_dict_bytes``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist (expected a .safetensors or .pt state_dict).")
    size = p.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise WeightsError(f"{p}: {size} bytes is over the {MAX_WEIGHTS_BYTES}-byte limit.")
    return read_state_dict_bytes(p.read_bytes(), str(p))


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], arch: str, source: str) -> None:
    """Raise a ``WeightsError`` naming the first mismatching keys, shapes, dtypes or non-finite tensors."""
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        raise WeightsError(
            f"{source}: not a state_dict of {arch}: {len(missing)} missing key(s) [{_listed(missing)}], "
            f"{len(unexpected)} unexpected key(s) [{_listed(unexpected)}]."
        )
    for key, ref in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise WeightsError(f"{source}: tensor {key!r} has shape {tuple(got.shape)}; {arch} needs {tuple(ref.shape)} "
                               "(weights for another number of classes, channels or width?).")
        if got.dtype != ref.dtype:
            raise WeightsError(f"{source}: tensor {key!r} is {got.dtype}; {arch} needs {ref.dtype}.")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise WeightsError(f"{source}: tensor {key!r} contains NaN or inf values.")


def load_weights(
    arch: str, weights: str | os.PathLike | bytes, num_classes: int, in_shape: tuple[int, int, int],
    source: str | None = None,
) -> nn.Module:
    """``arch`` with the weights of a file (path or bytes), in eval mode; never runs code from the file."""
    if isinstance(weights, (bytes, bytearray, memoryview)):
        state = read_state_dict_bytes(weights, source or "weights")
        src = source or "weights"
    else:
        state = read_state_dict(weights)
        src = source or str(weights)
    with torch.device("meta"):  # shapes only: no real allocation before the file is known to match
        expected = build_arch(arch, num_classes, in_shape).state_dict()
    check_state_dict(state, expected, arch, src)
    net = build_arch(arch, num_classes, in_shape)
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_external_model(
    arch: str,
    weights: str | os.PathLike | bytes,
    num_classes: int,
    in_shape: tuple[int, int, int],
    latent_layer: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    source: str | None = None,
) -> Any:
    """``load_weights`` then ``LatentClassifier.from_module``: a wrapped model ready for attacks and views."""
    from .external import ExternalModelError, wrap_module

    net = load_weights(arch, weights, num_classes, in_shape, source)
    src = source or ("weights" if isinstance(weights, (bytes, bytearray, memoryview)) else str(weights))
    try:
        return wrap_module(net, latent_layer=latent_layer, num_classes=num_classes, input_shape=tuple(in_shape),  # type: ignore[arg-type]
                           value_range=value_range, mean=mean, std=std, arch=arch)
    except ExternalModelError as err:
        raise WeightsError(f"{src}: {err}") from err


def load_for_dataset(
    arch: str, weights: str | os.PathLike | bytes, dataset: str, latent_layer: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0), source: str | None = None,
    mean: float | tuple[float, ...] | None = None, std: float | tuple[float, ...] | None = None,
) -> Any:
    """A wrapped model for ``dataset``: its input shape and number of classes fix the architecture.

    ``mean``/``std``: the per-channel normalisation the network was trained with (applied after
    ``value_range``, inside the model, so attacks still work on [0, 1] pixels)."""
    from .data import dataset_info

    info = dataset_info(dataset)
    return load_external_model(arch, weights, info.num_classes, info.in_shape, latent_layer, value_range,
                               mean=mean, std=std, source=source)


def evaluate_weights(
    arch: str,
    weights: str | os.PathLike,
    dataset: str,
    eps_list: Sequence[float],
    latent_layer: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    n: int = 500,
    split: str = "test",
    data_root: str | None = None,
    device: str = "auto",
    **kwargs: Any,
) -> Any:
    """``evaluate_checkpoint`` for an architecture plus a weights file: the first ``n`` examples of
    ``dataset``'s split through ``evaluate_robustness`` (same suite, same worst case)."""
    from .data import load_dataset
    from .evaluate import evaluate_robustness
    from .files import file_sha256
    from .train import resolve_device
    from .validation import check_int

    check_int("n", n, 1)
    model = load_for_dataset(arch, weights, dataset, latent_layer, value_range, mean=mean, std=std)
    ds = load_dataset(dataset, split, data_root, limit=n)
    dev = resolve_device(device)
    info = {"weights": os.fspath(weights), "sha256": file_sha256(weights), "arch": arch, "dataset": ds.name,
            "split": split, "loss": model.spec.loss, "encoder": model.spec.encoder, "latent_dim": model.spec.latent_dim,
            "latent_layer": model.spec.latent_layer, "value_range": list(model.spec.value_range),
            "input_mean": list(mean) if isinstance(mean, (tuple, list)) else mean,
            "input_std": list(std) if isinstance(std, (tuple, list)) else std, "adv_train": False,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type}
    model.to(dev).eval()
    return evaluate_robustness(model, ds.x, ds.y, eps_list, model_info=info, **kwargs)


def parse_value_range(text: str) -> tuple[float, float]:
    """``"0,255"`` -> (0.0, 255.0); one clear error for anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        lo = hi = float("nan")
    if not (lo < hi and abs(lo) < 1e30 and abs(hi) < 1e30):
        raise ValueError(f"--value-range={text!r} is invalid: give LOW,HIGH finite numbers with LOW < HIGH, e.g. 0,1 or 0,255.")
    return lo, hi


def parse_channels(text: str | None, flag: str, channels: int) -> tuple[float, ...] | None:
    """``"0.485,0.456,0.406"`` -> a tuple of one value or ``channels`` values (``--mean``/``--std``); None stays None.

    ``--std`` values must be > 0. One clear error names the flag, the value and what is allowed.
    """
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    allowed = f"give one number or {channels} comma-separated numbers (one per input channel)"
    if not vals or not all(abs(v) < 1e30 for v in vals):  # also refuses nan and inf
        raise ValueError(f"{flag}={text!r} is invalid: {allowed}, finite.")
    if len(vals) not in (1, channels):
        raise ValueError(f"{flag}={text!r} has {len(vals)} values but the inputs have {channels} channel"
                         f"{'s' if channels != 1 else ''}: {allowed}.")
    if flag.endswith("std") and min(vals) <= 0:
        raise ValueError(f"{flag}={text!r} is invalid: every std must be > 0 (it divides the input).")
    return vals

"""Latent classifiers: input normalisation -> encoder -> latent z (dim d) -> loss head -> scores.

``model(x)`` returns class scores (N, K) for inputs in [0, 1], so any attack library can use it;
``model.embed(x)`` returns z (N, d). The head is the loss module (see losses.py), so the decision
rule used at test time is exactly the one the loss trains for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .losses import LatentLoss, build_loss
from .validation import check_choice, check_int


def model_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module that holds neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def set_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default ``$GCCS_TORCH_THREADS``, else 1); returns the count.

    On a small shared machine more threads spin against each other: a 100-sample PGD took 6.7 s
    with 2 threads under load and 0.08 s with 1, so interactive callers (the app) default to one.
    """
    if threads is None:
        raw = os.environ.get("GCCS_TORCH_THREADS", "1")
        try:
            threads = int(raw)
        except ValueError:
            raise ValueError(f"GCCS_TORCH_THREADS={raw!r} invalid: a whole number >= 1 required.") from None
    check_int("threads", threads, 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` runs the block in eval mode and restores the previous train/eval mode after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so attacks work in [0, 1] input space."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"normalisation mean={mean} / std={std} invalid: equal lengths and std > 0 required.")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def mlp_encoder(in_shape: tuple[int, int, int], latent_dim: int, hidden: int = 256) -> nn.Module:
    """Two hidden layers with batch norm; for 8x8 digits (any small input works)."""
    n_in = in_shape[0] * in_shape[1] * in_shape[2]
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, latent_dim),
    )


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def cnn_encoder(in_shape: tuple[int, int, int], latent_dim: int, width: int = 32) -> nn.Module:
    """Small VGG-style CNN for 28x28 (works for any size: global average pooling at the end)."""
    c = in_shape[0]
    return nn.Sequential(
        *_conv_block(c, width),
        *_conv_block(width, width),
        nn.MaxPool2d(2),
        *_conv_block(width, 2 * width),
        *_conv_block(2 * width, 2 * width),
        nn.MaxPool2d(2),
        *_conv_block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, 128),
        nn.ReLU(),
        nn.Linear(128, latent_dim),
    )


def resnet18_encoder(in_shape: tuple[int, int, int], latent_dim: int) -> nn.Module:
    """torchvision's ResNet-18 adapted to 32x32: 3x3 stem, stride 1, no max-pool; fc -> latent."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=latent_dim)
    net.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp_encoder,
    "cnn": cnn_encoder,
    "resnet18": resnet18_encoder,
}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model's architecture (stored in every checkpoint)."""

    encoder: str
    in_shape: tuple[int, int, int]
    num_classes: int
    latent_dim: int
    loss: str
    loss_params: dict[str, float] = field(default_factory=dict)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        check_choice("encoder", self.encoder, ENCODERS)
        self.in_shape = tuple(int(v) for v in self.in_shape)  # type: ignore[assignment]
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.in_shape) != 3 or min(self.in_shape) < 1:
            raise ValueError(f"in_shape={self.in_shape} is invalid: expected (C, H, W) with positive sizes.")
        if len(self.mean) != self.in_shape[0]:
            raise ValueError(f"mean={self.mean} must have one value per input channel ({self.in_shape[0]}).")
        check_int("latent_dim", self.latent_dim, 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_shape"] = list(self.in_shape)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


class LatentClassifier(nn.Module):
    """normalise -> encoder -> z -> head scores. ``forward`` gives (N, K) scores; ``embed`` gives z."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.normalize = Normalize(spec.mean, spec.std)
        self.encoder = ENCODERS[spec.encoder](spec.in_shape, spec.latent_dim)
        self.head: LatentLoss = build_loss(spec.loss, spec.num_classes, spec.latent_dim, **spec.loss_params)

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        latent_layer: str | None = None,
        num_classes: int | None = None,
        input_shape: tuple[int, int, int] | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
        **kwargs: Any,
    ) -> LatentClassifier:
        """Wrap any ``nn.Module`` that returns logits (see ``gccs_core.external.wrap_module``)."""
        from .external import wrap_module

        return wrap_module(module, latent_layer=latent_layer, num_classes=num_classes, input_shape=input_shape,
                           value_range=value_range, **kwargs)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def latent_dim(self) -> int:
        return self.spec.latent_dim

    @property
    def centers(self) -> torch.Tensor | None:
        """(K, d) class centres: simplex vertices (GCCS, MMC), learned centres (center loss) or None (CE)."""
        return self.head.centers

    @property
    def sigma(self) -> float | None:
        """Per-dimension std of the class Gaussians for prototype models, else None."""
        return self.head.sigma

    @property
    def is_prototype(self) -> bool:
        """True when the prediction is the nearest fixed simplex vertex (GCCS, MMC)."""
        return self.head.prototype

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.encoder(self.normalize(x))

    def scores_from_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.head.scores(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.scores(self.embed(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss and scores of one batch (one encoder pass)."""
        z = self.embed(x)
        return self.head(z, y), self.head.scores(z)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted labels (N,), in eval mode (the model's mode is restored), batched."""
        with eval_mode(self):
            return torch.cat([self(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.spec.in_shape:
            raise ValueError(f"input has shape {tuple(x.shape)}; expected (N, {', '.join(map(str, self.spec.in_shape))}).")


def build_model(spec: ModelSpec) -> LatentClassifier:
    """Build an untrained model from its spec (the CLI, the app and checkpoints all use this)."""
    return LatentClassifier(spec)


@torch.no_grad()
def embed_batched(model: LatentClassifier, x: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (N, d) and scores (N, K) in eval mode, batched; the model's mode is restored."""
    dev = model_device(model)
    zs, ss = [], []
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            z = model.embed(x[i : i + batch_size].to(dev))
            zs.append(z.cpu())
            ss.append(model.scores_from_latent(z).cpu())
    return torch.cat(zs), torch.cat(ss)


def _fold_batch_norm(module: nn.Module) -> None:
    """In place: fold every eval-mode batch norm into the conv / linear layer that feeds it.

    Pairs are found two ways: consecutive entries of an ``nn.Sequential`` (our MLP and CNN, ResNet
    downsample branches) and sibling attributes ``convN`` / ``bnN`` (torchvision's ResNet blocks).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    def fused(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
        if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            return fuse_conv_bn_eval(layer, bn)
        if isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and bn.track_running_stats:
            return fuse_linear_bn_eval(layer, bn)
        return None

    for child in module.children():
        _fold_batch_norm(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            f = fused(module._modules[a], module._modules[b])  # type: ignore[arg-type]
            if f is not None:
                module._modules[a], module._modules[b] = f, nn.Identity()
    for name in list(module._modules):
        if name.startswith("conv") and f"bn{name[4:]}" in module._modules:
            f = fused(module._modules[name], module._modules[f"bn{name[4:]}"])  # type: ignore[arg-type]
            if f is not None:
                setattr(module, name, f)
                setattr(module, f"bn{name[4:]}", nn.Identity())


def attack_copy(model: LatentClassifier) -> LatentClassifier:
    """A frozen eval-mode copy of ``model`` that computes the same function faster, for attacks.

    Batch norm is folded into the preceding layer, weights are stored channels-last (oneDNN's fast
    layout) and no parameter needs a gradient, so a forward+backward to the input is about 1.5x
    faster on a CPU. Scores agree with the original to float rounding (about 1e-6 relative); an
    attack's final predictions are still taken from the original model. Any model that is not a
    ``LatentClassifier`` (a wrapped module with the same methods) is returned as it is.
    """
    import copy

    if not isinstance(model, LatentClassifier):
        return model

    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    _fold_batch_norm(fast.encoder)
    return fast.to(memory_format=torch.channels_last)

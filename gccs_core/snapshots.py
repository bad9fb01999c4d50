"""Latent snapshots during training: the data behind an "epochs" animation of the latent space.

``LatentSnapshots`` is a ``train.Callback``: after every ``every``-th epoch it embeds a fixed probe
set (eval mode; the model's mode is restored) and keeps the latents, predictions and the epoch's
metrics. Project all snapshots with one fitted ``LatentProjection`` (``projection.transform``
accepts the stacked (E, N, d) array) so the frames share axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .models import LatentClassifier, embed_batched
from .train import Callback, EpochInfo
from .validation import check_int


@dataclass
class Snapshot:
    """Latents of the probe set after one epoch."""

    epoch: int  # 1-based: the number of epochs completed
    z: np.ndarray  # (N, d) float32
    pred: np.ndarray  # (N,) int64
    train_loss: float
    test_accuracy: float


@dataclass
class LatentSnapshots(Callback):
    """Record the probe set's latents after every ``every`` epochs (at most ``max_snapshots``, evenly kept).

    Args:
        x: probe inputs (N, C, H, W) in [0, 1]; keep N small (a few hundred).
        every: record after epochs ``every, 2*every, ...`` (the last epoch is always recorded).
        max_snapshots: memory bound; when exceeded, every other stored snapshot is dropped (the
            first and the newest are kept).
    """

    x: torch.Tensor
    every: int = 1
    max_snapshots: int = 100
    snapshots: list[Snapshot] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not torch.is_tensor(self.x) or self.x.dim() != 4 or len(self.x) < 1:
            raise ValueError(f"x must be a non-empty (N, C, H, W) tensor; got {getattr(self.x, 'shape', type(self.x))}.")
        check_int("every", self.every, 1)
        check_int("max_snapshots", self.max_snapshots, 2)

    def record(self, model: LatentClassifier, epoch: int, train_loss: float = float("nan"),
               test_accuracy: float = float("nan")) -> Snapshot:
        """Embed the probe set now and store it as the snapshot of ``epoch``."""
        z, scores = embed_batched(model, self.x)
        snap = Snapshot(epoch, z.numpy().astype(np.float32), scores.argmax(1).numpy().astype(np.int64),
                        float(train_loss), float(test_accuracy))
        self.snapshots.append(snap)
        if len(self.snapshots) > self.max_snapshots:
            newest = self.snapshots[-1]
            self.snapshots = self.snapshots[:-1:2] + [newest]
        return snap

    def on_epoch(self, info: EpochInfo, model: LatentClassifier) -> bool | None:
        done = info.epoch + 1
        if done % self.every == 0 or done == info.epochs:
            self.record(model, done, info.train_loss, info.test_accuracy)
        return None

    @property
    def epochs(self) -> list[int]:
        return [s.epoch for s in self.snapshots]

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """Latents (E, N, d) and predictions (E, N) of all snapshots, oldest first."""
        if not self.snapshots:
            raise ValueError("no snapshots recorded yet: train at least one epoch with this callback.")
        return np.stack([s.z for s in self.snapshots]), np.stack([s.pred for s in self.snapshots])

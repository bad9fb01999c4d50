"""Training runs logged to TensorBoard (``tensorboard`` is an optional extra: ``pip install tensorboard``).

``TensorBoardCallback(log_dir, probe=(x, y))`` is a training ``Callback`` that writes, with
``torch.utils.tensorboard.SummaryWriter``:

* every step: ``train/loss``, ``train/batch_accuracy``, ``train/lr`` (x axis: the global step);
* every epoch: ``epoch/train_loss``, ``epoch/train_accuracy``, ``epoch/test_accuracy`` and, on the
  probe examples, each term of the loss as ``loss_terms/<name>`` (x axis: the epoch, from 1);
* every ``embed_every`` epochs: the probe's latents as an embedding ``latent`` (labels, class names
  and image thumbnails as metadata), so TensorBoard's Projector tab opens them.

Open with ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .models import LatentClassifier, embed_batched, model_device
from .train import Callback, EpochInfo, StepInfo

INSTALL_HINT = "TensorBoard logging needs the optional tensorboard package: pip install tensorboard"
MAX_EMBED_POINTS = 2000


class TensorBoardUnavailable(ImportError, ValueError):
    """``tensorboard`` is not installed (a ValueError too, so command lines report it in one line)."""


def summary_writer(log_dir: str | os.PathLike) -> Any:
    """A ``SummaryWriter`` for ``log_dir``; one clear error when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise TensorBoardUnavailable(f"{INSTALL_HINT} (--tensorboard {os.fspath(log_dir)!r} was asked for).") from err
    return SummaryWriter(log_dir=os.fspath(log_dir))


class TensorBoardCallback(Callback):
    """Logs losses, accuracies, learning rate and latent snapshots of a run (see the module docstring).

    Args:
        log_dir: folder for the event files (created).
        probe: (x, y) examples for the loss terms and the latent snapshots (None: scalars only); at
            most ``MAX_EMBED_POINTS`` are used.
        class_names: names for the embedding's metadata (default: the label numbers).
        embed_every: a latent snapshot every this many epochs (and after the last one).
        log_every: write the per-step scalars every this many steps.
    """

    def __init__(self, log_dir: str | os.PathLike, probe: tuple[torch.Tensor, torch.Tensor] | None = None,
                 class_names: Sequence[str] | None = None, embed_every: int = 1, log_every: int = 1) -> None:
        for name, value in (("embed_every", embed_every), ("log_every", log_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= 1.")
        if probe is not None:
            x, y = probe
            if not (torch.is_tensor(x) and torch.is_tensor(y) and x.dim() == 4 and y.shape == (x.shape[0],) and len(y)):
                raise ValueError("probe must be (x (N, C, H, W), y (N,)) tensors with N >= 1.")
            probe = (x[:MAX_EMBED_POINTS], y[:MAX_EMBED_POINTS])
        self.writer = summary_writer(log_dir)
        self.log_dir = os.fspath(log_dir)
        self.probe = probe
        self.class_names = list(class_names) if class_names is not None else None
        self.embed_every = embed_every
        self.log_every = log_every

    def on_step(self, info: StepInfo) -> None:
        if info.global_step % self.log_every == 0:
            self.writer.add_scalar("train/loss", info.loss, info.global_step)
            self.writer.add_scalar("train/batch_accuracy", info.accuracy, info.global_step)
            self.writer.add_scalar("train/lr", info.lr, info.global_step)

    def on_epoch(self, info: EpochInfo, model: LatentClassifier) -> None:
        epoch = info.epoch + 1
        self.writer.add_scalar("epoch/train_loss", info.train_loss, epoch)
        self.writer.add_scalar("epoch/train_accuracy", info.train_accuracy, epoch)
        self.writer.add_scalar("epoch/test_accuracy", info.test_accuracy, epoch)
        if self.probe is not None:
            z, y = self._probe_latents(model)
            head = getattr(model, "head", None)
            if hasattr(head, "compute_terms"):
                with torch.no_grad():
                    dev = model_device(model)
                    for name, value in head.compute_terms(z.to(dev), y.to(dev)).items():
                        self.writer.add_scalar(f"loss_terms/{name}", float(value), epoch)
            if epoch % self.embed_every == 0 or epoch == info.epochs:
                self._embedding(z, y, epoch)
        self.writer.flush()

    def _probe_latents(self, model: LatentClassifier) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.probe is not None
        z, _ = embed_batched(model, self.probe[0])
        return z, self.probe[1]

    def _embedding(self, z: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        x = self.probe[0]  # type: ignore[index]
        names = self.class_names
        meta = [[str(int(v)), names[int(v)] if names and int(v) < len(names) else str(int(v))] for v in y]
        images = x if x.shape[1] in (1, 3) else x[:, :1]
        self.writer.add_embedding(z, metadata=meta, metadata_header=["label", "class"], label_img=images,
                                  global_step=epoch, tag="latent")

    def close(self) -> None:
        self.writer.close()



def callback_for_run(log_dir: str | os.PathLike, dataset: str, data_root: str | None = None,
                     probe_n: int = 500) -> TensorBoardCallback:
    """A callback whose probe is the first ``probe_n`` test examples of ``dataset`` (what ``--tensorboard`` uses)."""
    from .data import load_dataset

    try:  # fail on a missing tensorboard before loading any data
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as err:
        raise TensorBoardUnavailable(f"{INSTALL_HINT} (--tensorboard {os.fspath(log_dir)!r} was asked for).") from err
    probe = load_dataset(dataset, "test", data_root, limit=probe_n)
    return TensorBoardCallback(log_dir, probe=(probe.x, probe.y), class_names=probe.class_names)

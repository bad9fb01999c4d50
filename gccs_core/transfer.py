"""Transfer attacks and per-step readouts, as numpy arrays for the app.

``transfer_attack`` crafts an attack on one model (white-box, with its recorded trajectory) and replays the
very same inputs, every step and the final adversarial, on another model (a black-box transfer): the
classic check of gradient masking, where a model that resists its own gradients but falls to inputs
crafted on another model is masking, not robust. ``replay`` feeds any frames of inputs to a model.

``step_bars`` is what one sample looks like to a model at one step: its distance to every prototype for a
nearest-vertex model (GCCS, MMC: the nearest vertex is the decision), else its class scores.

Torch is imported only inside the functions that run a model; this module imports without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .views import distances, fooled, perturbation_norms

if TYPE_CHECKING:  # pragma: no cover
    from .models import LatentClassifier

BAR_KINDS = ("distance", "score")
"""What ``step_bars`` returns: distances to the prototypes (lowest wins) or class scores (highest wins)."""


@dataclass(frozen=True)
class Replay:
    """A model's reading of frames of inputs: latents ``z`` (T, N, d), ``scores`` (T, N, K), ``pred`` (T, N)."""

    z: np.ndarray
    scores: np.ndarray
    pred: np.ndarray

    def fooled(self, y: np.ndarray, target: int | None = None) -> np.ndarray:
        """(T, N) True where the frame fools this model (the target reached, or any wrong class)."""
        return fooled(self.pred, y, target)


@dataclass(frozen=True)
class TransferResult:
    """An attack crafted on a source model and replayed on a target model.

    ``x`` (T, N, C, H, W) are the source's recorded frames (frame 0 clean); ``source`` and ``replayed`` are the
    two models' readings of them. ``source_success`` (N,) is the white-box result of the attack on the source
    (its best adversarial per sample), ``transfer_success`` (N,) whether that same adversarial fools the target.
    ``perturbation`` (T, N) is each frame's input-space norm (``norm``).
    """

    x: np.ndarray
    source: Replay
    replayed: Replay
    source_success: np.ndarray
    transfer_success: np.ndarray
    perturbation: np.ndarray
    norm: str

    @property
    def source_rate(self) -> float:
        """Fraction of samples the attack fools on the model it was crafted on."""
        return float(np.mean(self.source_success))

    @property
    def transfer_rate(self) -> float:
        """Fraction of samples the same adversarial inputs fool on the other model."""
        return float(np.mean(self.transfer_success))


def _frames_tensor(x_frames: Any) -> Any:
    import torch

    t = torch.as_tensor(np.asarray(x_frames, dtype=np.float32)) if not torch.is_tensor(x_frames) else x_frames.float()
    if t.dim() != 5:
        raise ValueError(f"x_frames must be (T, N, C, H, W) frames of inputs; got shape {tuple(t.shape)}.")
    return t


def replay(model: LatentClassifier, x_frames: Any, batch_size: int = 512) -> Replay:
    """Feed frames of inputs ``x_frames`` (T, N, C, H, W; numpy or tensor, in [0, 1]) to ``model`` in eval mode."""
    from .models import embed_batched

    t = _frames_tensor(x_frames)
    steps, n = t.shape[:2]
    if n == 0:
        raise ValueError("x_frames holds no sample: nothing to replay.")
    z, s = embed_batched(model, t.reshape(steps * n, *t.shape[2:]), batch_size)
    z, s = z.numpy().reshape(steps, n, -1), s.numpy().reshape(steps, n, -1)
    return Replay(z=z.astype(np.float32), scores=s.astype(np.float32), pred=s.argmax(-1).astype(np.int64))


def transfer_attack(source_model: LatentClassifier, target_model: LatentClassifier, x: Any, y: Any,
                    target: int | None = None, **attack_args: Any) -> TransferResult:
    """Run ``run_attack(source_model, x, y, ..., record=True)`` and replay its frames and result on ``target_model``.

    ``attack_args`` go to ``gccs_core.attacks.run_attack`` (attack, eps, steps, norm, objective, seed, ...).
    Both models must take the same inputs and labels (the same dataset).
    """
    import torch

    from .attacks import run_attack

    if getattr(source_model, "num_classes", None) != getattr(target_model, "num_classes", None):
        raise ValueError(f"the models have {source_model.num_classes} and {target_model.num_classes} classes: "
                         "a transfer needs two models of the same dataset.")
    attack_args.pop("record", None)
    res = run_attack(source_model, x, y, target=target, record=True, **attack_args)
    traj = res.trajectory
    frames = traj.x.float()
    replayed = replay(target_model, frames)
    y_np = torch.as_tensor(y).cpu().numpy()
    final = replay(target_model, res.x_adv[None])
    hit = fooled(final.pred[0], y_np, target)
    norm = str(attack_args.get("norm", "linf"))
    source = Replay(z=traj.z.numpy().astype(np.float32), scores=traj.scores.numpy().astype(np.float32),
                    pred=traj.pred.numpy().astype(np.int64))
    return TransferResult(x=frames.numpy(), source=source, replayed=replayed,
                          source_success=res.success.numpy().astype(bool), transfer_success=np.asarray(hit, dtype=bool),
                          perturbation=perturbation_norms(frames.numpy(), norm), norm=norm)


def step_bars(z: np.ndarray, scores: np.ndarray, prototypes: np.ndarray | None, nearest_vertex: bool) -> dict[str, Any]:
    """One sample at one step as bars: ``{"values": (K,), "kind": "distance" | "score", "winner": k}``.

    ``z`` (d,) and ``scores`` (K,) are the sample's latent and class scores; a nearest-vertex model
    (``nearest_vertex``, with ``prototypes`` (K, d)) gives the distance to every prototype (the nearest wins),
    any other model its class scores (the highest wins).
    """
    z, scores = np.asarray(z, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if z.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"step_bars takes one sample: z (d,) and scores (K,); got {z.shape} and {scores.shape}.")
    if nearest_vertex:
        if prototypes is None or not np.isfinite(np.asarray(prototypes, dtype=np.float64)).all():
            raise ValueError("a nearest-vertex model needs a finite prototype for every class.")
        dist = distances(z, prototypes)
        if len(dist) != len(scores):
            raise ValueError(f"{len(dist)} prototypes but {len(scores)} class scores.")
        return {"values": dist.astype(np.float32), "kind": "distance", "winner": int(np.argmin(dist))}
    return {"values": scores.astype(np.float32), "kind": "score", "winner": int(np.argmax(scores))}

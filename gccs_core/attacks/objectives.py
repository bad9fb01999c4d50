"""What an attack ascends: per-example score objectives (CE, margin, DLR) and the latent objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import LatentClassifier
from .types import _TINY, OBJECTIVES


def _other_max(scores: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    other = scores.clone()
    other.scatter_(1, cls[:, None], float("-inf"))
    return other.max(1).values


def margin_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``max_{k != y} s_k - s_y`` (positive = misclassified). Never saturates."""
    return _other_max(scores, y) - scores.gather(1, y[:, None]).squeeze(1)


def dlr_loss(scores: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """DLR loss (Croce & Hein 2020), per example, to be ascended.

    Untargeted: ``-(s_y - max_{k != y} s_k) / (s_pi1 - s_pi3)``; targeted:
    ``-(s_y - s_t) / (s_pi1 - (s_pi3 + s_pi4) / 2)`` with ``s_pi`` the sorted scores. With fewer than
    3 (4) classes the lowest score stands in for ``s_pi3`` (``s_pi4``).
    """
    srt = scores.sort(1, descending=True).values
    k = scores.shape[1]
    s_y = scores.gather(1, y[:, None]).squeeze(1)
    if target is None:
        denom = srt[:, 0] - srt[:, min(2, k - 1)]
        return -(s_y - _other_max(scores, y)) / (denom + _TINY)
    s_t = scores.gather(1, target[:, None]).squeeze(1)
    denom = srt[:, 0] - 0.5 * (srt[:, min(2, k - 1)] + srt[:, min(3, k - 1)])
    return -(s_y - s_t) / (denom + _TINY)


def objective_loss(scores: torch.Tensor, y: torch.Tensor, objective: str) -> torch.Tensor:
    """Per-example untargeted score objective (``ce``, ``margin`` or ``dlr``) that an attack ascends."""
    if objective == "ce":
        return F.cross_entropy(scores, y, reduction="none")
    if objective == "margin":
        return margin_loss(scores, y)
    if objective == "dlr":
        return dlr_loss(scores, y)
    if objective == "latent":
        raise ValueError("objective='latent' needs the latents; use attack_objective(model, ...) or run_attack.")
    raise ValueError(f"objective={objective!r} is unknown; allowed: {', '.join(OBJECTIVES)}.")


def embed_at(model: LatentClassifier, x: torch.Tensor, amp: str) -> torch.Tensor:
    """Latents of ``x``; with ``amp="bf16"`` the encoder runs under bfloat16 autocast, z comes back float32."""
    if amp == "none":
        return model.embed(x)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
        z = model.embed(x)
    return z.float()


def attack_objective(
    model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, objective: str, target: torch.Tensor | None = None,
    amp: str = "none",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example loss the attack ascends, plus the latents and scores of ``x`` (one forward pass).

    Targeted objectives pull towards ``target``: ``ce`` -> ``-CE(s, t)``, ``margin`` ->
    ``s_t - max_{k != t} s_k``, ``dlr`` -> targeted DLR, ``latent`` -> ``-||z - mu_t||^2 / (2 sigma^2)``.
    ``amp="bf16"`` runs the encoder under bfloat16 autocast; the head and the loss stay float32.
    """
    z = embed_at(model, x, amp)
    scores = model.scores_from_latent(z)
    if objective == "latent":
        centers = model.centers
        if centers is None:
            raise ValueError("objective='latent' needs a model with class centres (gccs, mmc, center); this model has none.")
        sigma = model.sigma or 1.0  # center loss has centres but no sigma: plain squared distance
        ref = centers[target if target is not None else y]
        dist = (z - ref).pow(2).sum(1) / (2.0 * sigma * sigma)
        return (-dist if target is not None else dist), z, scores
    if target is None:
        return objective_loss(scores, y, objective), z, scores
    if objective == "ce":
        return -F.cross_entropy(scores, target, reduction="none"), z, scores
    if objective == "margin":
        return -margin_loss(scores, target), z, scores
    if objective == "dlr":
        return dlr_loss(scores, y, target), z, scores
    raise ValueError(f"objective={objective!r} is unknown; allowed: {', '.join(OBJECTIVES)}.")

"""Adversarial attacks on a model's class scores (inputs in [0, 1]).

This module starts with the PGD used for adversarial training; the full attack suite
(FGSM, BIM, MIM, objectives, trajectories) builds on the same helpers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OBJECTIVES = ("ce", "margin")


def margin_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``max_{k != y} s_k - s_y`` (positive = misclassified). Never saturates."""
    true = scores.gather(1, y[:, None]).squeeze(1)
    other = scores.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.max(1).values - true


def objective_loss(scores: torch.Tensor, y: torch.Tensor, objective: str) -> torch.Tensor:
    """Per-example loss an untargeted attack ascends."""
    if objective == "ce":
        return F.cross_entropy(scores, y, reduction="none")
    if objective == "margin":
        return margin_loss(scores, y)
    raise ValueError(f"objective={objective!r} is unknown; allowed: {', '.join(OBJECTIVES)}.")


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float | None = None,
    objective: str = "ce",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted L-inf PGD (Madry et al. 2018). Returns adversarial inputs; the model's mode is untouched.

    Gradients are taken with ``torch.autograd.grad`` w.r.t. the input only, so parameter ``.grad``
    stays as it was (safe inside a training step).
    """
    if eps < 0:
        raise ValueError(f"eps={eps!r} is invalid: it must be >= 0.")
    if steps < 1:
        raise ValueError(f"steps={steps!r} is invalid: it must be >= 1.")
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1
        x_adv = (x + eps * noise).clamp(0, 1)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = objective_loss(model(x_adv), y, objective).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()

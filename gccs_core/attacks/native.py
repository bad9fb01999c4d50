"""Native attacks, batched PyTorch on any device, on one loop: FGSM, PGD, BIM, MIM (and PGD for training).

* ``fgsm``: one signed-gradient step of size eps (Goodfellow et al. 2015); L2: one normalised step.
* ``pgd``: projected gradient descent (Madry et al. 2018) with random start and restarts.
* ``bim``: basic iterative method (Kurakin et al. 2017): PGD from the clean input, no restarts.
* ``mim``: momentum iterative method (Dong et al. 2018), decay ``MIM_DECAY``, from the clean input.

Iterative attacks keep, per example, the best iterate (a successful one if any step succeeded), as
AutoAttack does, so a late step that undoes a success does not count as a failure.
"""

from __future__ import annotations

import torch

from ..models import LatentClassifier, attack_copy, model_device
from ..validation import check_choice, check_int, check_number
from .objectives import attack_objective
from .types import _TINY, MIM_DECAY, OBJECTIVES, STEP_FACTOR, AttackResult, AttackSpec, Trajectory, succeeded

Frames = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator | None) -> torch.Tensor:
    """A uniform point of the threat ball around ``x`` (L2: uniform direction, uniform radius), clipped to [0, 1]."""
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps
    else:
        direction = torch.randn(x.shape, generator=gen).to(x.device)
        radius = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=gen).to(x.device) * eps
        noise = direction / (_flat_norm(direction) + _TINY) * radius
    return (x + noise).clamp(0, 1)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Clip ``x_adv`` into the eps-ball around ``x`` and into the image range [0, 1]."""
    if norm == "linf":
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
    else:
        delta = x_adv - x
        delta = delta * torch.clamp(eps / (_flat_norm(delta) + _TINY), max=1.0)
        x_adv = x + delta
    return x_adv.clamp(0, 1)


def _step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    return grad / (_flat_norm(grad) + _TINY)


def _iterate(
    model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, spec: AttackSpec,
    alpha: float, start: torch.Tensor, record: bool = False, early_stop: bool = False, keep_best: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Frames | None]:
    """The one gradient loop. Returns (best x, best loss, best success, frames or None).

    Each iterate is scored in the same forward pass that gives the gradient for the next step
    (``steps + 1`` forwards and ``steps`` backwards in all). With ``early_stop`` an example leaves the
    active batch once it succeeds (its successful iterate is kept): the result is the same and most
    of the work at large eps is saved. ``keep_best=False`` (adversarial training) skips the scoring and
    the last forward and returns the last iterate (loss and success are then not computed).
    """
    n = x.shape[0]
    best_x = start.clone()
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    best_succ = torch.zeros(n, dtype=torch.bool, device=x.device)
    frames: Frames | None = [] if record else None
    active = torch.arange(n, device=x.device)
    x_cur = start.clone()
    momentum = torch.zeros_like(x) if spec.attack == "mim" else None
    for t in range(spec.steps + 1):
        last = t == spec.steps
        if last and not keep_best:
            return x_cur.detach(), best_loss, best_succ, None
        xa = x_cur[active].detach().requires_grad_(not last)
        ya = y[active]
        ta = target[active] if target is not None else None
        with torch.set_grad_enabled(not last):
            loss, z, s = attack_objective(model, xa, ya, spec.objective, ta, spec.amp)
        if t > 0 and keep_best:  # the candidates are the iterates after each step (not the start point)
            with torch.no_grad():
                succ = succeeded(s.argmax(1), ya, ta)
                better = (succ & ~best_succ[active]) | ((succ == best_succ[active]) & (loss > best_loss[active]))
                idx = active[better]
                best_x[idx] = xa.detach()[better]
                best_loss[idx] = loss.detach()[better]
                best_succ[idx] = succ[better]
                if frames is not None:
                    frames.append((xa.detach().cpu(), z.detach().cpu(), s.detach().cpu()))
        if last:
            break
        (grad,) = torch.autograd.grad(loss.sum(), xa)
        if early_stop and not record:
            keep = ~best_succ[active]
            active, xa, grad = active[keep], xa[keep], grad[keep]
            if active.numel() == 0:
                break
        if momentum is not None:
            g = momentum[active] * MIM_DECAY + grad / (grad.abs().flatten(1).sum(1).view(-1, 1, 1, 1) + _TINY)
            momentum[active] = g
            grad = g
        x_cur[active] = project(xa.detach() + alpha * _step_direction(grad, spec.norm), x[active], spec.eps, spec.norm)
    return best_x, best_loss, best_succ, frames


def native_attack(
    model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, target: torch.Tensor | None = None,
    record: bool = False, early_stop: bool = False,
) -> AttackResult:
    """FGSM / PGD / BIM / MIM on a model already in eval mode, labels and target already checked.

    FGSM is one step of size eps from the clean input (``steps``, ``random_start`` and ``restarts``
    are ignored); BIM and MIM start from the clean input and do not restart.
    """
    dev = model_device(model)
    x = x.detach().to(dev, torch.float32)
    y = y.to(dev)
    tgt = target.to(dev) if target is not None else None
    if spec.attack == "fgsm":
        spec, alpha = spec.with_(steps=1, restarts=1, random_start=False), spec.eps
    else:
        alpha = spec.alpha
        if spec.attack in ("bim", "mim"):
            spec = spec.with_(restarts=1, random_start=False)
    gen = torch.Generator().manual_seed(int(spec.seed))
    fast = attack_copy(model)
    z0 = s0 = None
    if record:  # frame 0 of the trajectory: the clean input
        with torch.no_grad():
            z0 = fast.embed(x)
            s0 = fast.scores_from_latent(z0)
    best_x = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    best_succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    chosen = torch.full((x.shape[0],), -1, dtype=torch.long)
    runs: list[Frames] = []
    for r in range(spec.restarts):
        start = _random_start(x, spec.eps, spec.norm, gen) if spec.random_start and spec.eps > 0 else x.clone()
        rx, rloss, rsucc, frames = _iterate(fast, x, y, tgt, spec, alpha, start, record, early_stop)
        better = (rsucc & ~best_succ) | ((rsucc == best_succ) & (rloss > best_loss))
        best_x[better] = rx[better]
        best_loss[better] = rloss[better]
        best_succ[better] = rsucc[better]
        chosen[better.cpu()] = r
        if frames is not None:
            runs.append(frames)
    with torch.no_grad():  # the verdict comes from the model itself, not from its fast copy
        pred = model(best_x).argmax(1)
    success = succeeded(pred, y, tgt)
    trajectory = None
    if record and z0 is not None and s0 is not None:
        trajectory = _build_trajectory(x.cpu(), z0.cpu(), s0.cpu(), runs, chosen)
    return AttackResult(best_x.cpu(), pred.cpu(), success.cpu(), trajectory)


def _build_trajectory(
    x0: torch.Tensor, z0: torch.Tensor, s0: torch.Tensor, runs: list[Frames], chosen: torch.Tensor
) -> Trajectory:
    """Stack the frames; per example, use the restart whose result was kept (restart 0 if none improved)."""
    stacked = [[torch.stack([f[i] for f in frames]) for i in range(3)] for frames in runs]
    pick = chosen.clamp(min=0)
    xs, zs, ss = (torch.stack([run[i] for run in stacked]) for i in range(3))  # (R, T, N, ...)
    ar = torch.arange(x0.shape[0])
    xs, zs, ss = xs[pick, :, ar].transpose(0, 1), zs[pick, :, ar].transpose(0, 1), ss[pick, :, ar].transpose(0, 1)
    x = torch.cat([x0[None], xs])
    z = torch.cat([z0[None], zs])
    scores = torch.cat([s0[None], ss])
    return Trajectory(x=x, z=z, scores=scores, pred=scores.argmax(-1), steps=list(range(x.shape[0])))


def pgd_linf(
    model: LatentClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float | None = None,
    objective: str = "ce",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted L-inf PGD (Madry et al. 2018) for adversarial training; returns the last iterate.

    The same loop as ``pgd`` without the best-iterate bookkeeping. The model's mode is untouched (the
    training loop sets eval itself) and gradients are taken w.r.t. the input only, so parameter
    ``.grad`` stays as it was. ``generator`` draws the random start.
    """
    check_number("eps", eps, 0.0)
    check_int("steps", steps, 1)
    check_choice("objective", objective, OBJECTIVES)
    alpha = step_size if step_size is not None else STEP_FACTOR * eps / steps
    spec = AttackSpec("pgd", eps, steps, "linf", objective, step_size)
    x = x.detach()
    start = _random_start(x, eps, "linf", generator) if random_start else x.clone()
    x_adv, _, _, _ = _iterate(model, x, y, None, spec, alpha, start, keep_best=False)
    return x_adv


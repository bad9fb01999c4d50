"""Adversarial attacks on a model's class scores, for inputs in [0, 1], with recorded trajectories.

Native attacks (batched PyTorch, any device, no Python loop over samples):

* ``fgsm``: one signed-gradient step of size eps (Goodfellow et al. 2015); L2: one normalised step.
* ``pgd``: projected gradient descent (Madry et al. 2018) with random start and restarts.
* ``bim``: basic iterative method (Kurakin et al. 2017): PGD from the clean input, no restarts.
* ``mim``: momentum iterative method (Dong et al. 2018), decay 1.0, from the clean input.

Every native attack takes an ``objective``: ``ce`` (cross-entropy on the scores), ``margin``
(``max_{k != y} s_k - s_y``), ``dlr`` (difference of logits ratio, Croce & Hein 2020; shift and
scale invariant, so it does not saturate on the large distance scores of prototype models) and
``latent`` (models with class centres: push z away from ``mu_y``; targeted: pull z to ``mu_t``).
Iterative attacks keep, per example, the best iterate (a successful one if any step succeeded),
as AutoAttack does, so a late step that undoes a success does not count as a failure.

ART-backed attacks (``cw``, ``deepfool``, ``apgd-ce``, ``apgd-dlr``, ``square``) go through
:mod:`gccs_core.art_adapter`; their trajectories hold only the clean and the final frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .models import attack_copy, eval_mode, model_device
from .validation import check_choice, check_int, check_labels, check_number

NATIVE_ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "bim", "mim")
ART_ATTACKS: tuple[str, ...] = ("cw", "deepfool", "apgd-ce", "apgd-dlr", "square")
ATTACKS: tuple[str, ...] = NATIVE_ATTACKS + ART_ATTACKS
OBJECTIVES: tuple[str, ...] = ("ce", "margin", "dlr", "latent")
NORMS: tuple[str, ...] = ("linf", "l2")
AMP: tuple[str, ...] = ("none", "bf16")
"""Precision of a native attack's forward/backward through the encoder: ``none`` (float32) or ``bf16``
(autocast; about 2x faster on CPUs with AMX and on GPUs). Predictions that decide success are float32."""
STEP_FACTOR = 2.5
"""Default step size is ``STEP_FACTOR * eps / steps`` (Madry et al.'s choice: the whole ball is reachable)."""
MIM_DECAY = 1.0
"""Momentum decay of MIM (Dong et al. 2018 use 1.0)."""
_TINY = 1e-12


@dataclass
class Trajectory:
    """Recorded attack frames; index 0 is the clean input, frame ``i`` is the iterate after ``steps[i]`` steps."""

    x: torch.Tensor  # (T+1, N, C, H, W)
    z: torch.Tensor  # (T+1, N, d)
    scores: torch.Tensor  # (T+1, N, K)
    pred: torch.Tensor  # (T+1, N)
    steps: list[int]


@dataclass
class AttackResult:
    """Outcome of one attack on a batch (all tensors on CPU)."""

    x_adv: torch.Tensor  # (N, C, H, W)
    pred: torch.Tensor  # (N,)
    success: torch.Tensor  # (N,) bool: untargeted -> pred != y; targeted -> pred == target
    trajectory: Trajectory | None


# -- objectives --------------------------------------------------------------------------------


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


def _embed(model: nn.Module, x: torch.Tensor, amp: str) -> torch.Tensor:
    """Latents of ``x``; with ``amp="bf16"`` the encoder runs under bfloat16 autocast, z comes back float32."""
    if amp == "none":
        return model.embed(x)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
        z = model.embed(x)
    return z.float()


def attack_objective(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: str, target: torch.Tensor | None = None,
    amp: str = "none",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example loss the attack ascends, plus the latents and scores of ``x`` (one forward pass).

    Targeted objectives pull towards ``target``: ``ce`` -> ``-CE(s, t)``, ``margin`` ->
    ``s_t - max_{k != t} s_k``, ``dlr`` -> targeted DLR, ``latent`` -> ``-||z - mu_t||^2 / (2 sigma^2)``.
    ``amp="bf16"`` runs the encoder under bfloat16 autocast; the head and the loss stay float32.
    """
    z = _embed(model, x, amp)
    scores = model.scores_from_latent(z)
    if objective == "latent":
        centers = model.centers
        if centers is None:
            raise ValueError("objective='latent' needs a model with class centres (gccs, mmc, center); this model has none.")
        sigma = model.sigma or 1.0
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


# -- validation --------------------------------------------------------------------------------


def check_attack_args(
    attack: str, eps: float, steps: int, norm: str, objective: str, restarts: int, step_size: float | None,
    amp: str = "none",
) -> None:
    """Validate attack arguments; raise ``ValueError`` naming the bad value and what is allowed."""
    check_choice("attack", attack, ATTACKS)
    check_choice("amp", amp, AMP)
    if amp != "none" and attack not in NATIVE_ATTACKS:
        raise ValueError(f"amp={amp!r} applies to the native attacks ({', '.join(NATIVE_ATTACKS)}); "
                         f"attack={attack!r} runs through ART in float32: use amp='none'.")
    check_number("eps", eps, 0.0)
    check_int("steps", steps, 1)
    check_choice("norm", norm, NORMS)
    check_choice("objective", objective, OBJECTIVES)
    check_int("restarts", restarts, 1)
    if step_size is not None:
        check_number("step_size", step_size, 0.0, open_low=True)


def resolve_target(target: int | torch.Tensor | None, n: int, num_classes: int) -> torch.Tensor | None:
    """Target labels as an (n,) int64 tensor, or None; a class outside ``[0, K-1]`` is a ValueError."""
    if target is None:
        return None
    if isinstance(target, bool):
        raise ValueError(f"target={target!r} is invalid: give a class index in [0, {num_classes - 1}].")
    if isinstance(target, int):
        if not 0 <= target < num_classes:  # before torch.full, which overflows on a huge int
            raise ValueError(f"target class {target} is outside the label set: allowed classes are 0..{num_classes - 1}.")
        t = torch.full((n,), target, dtype=torch.long)
    elif torch.is_tensor(target):
        if target.is_floating_point():
            raise ValueError(f"target has dtype {target.dtype}; expected integer class indices.")
        t = target.detach().to("cpu", torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(n).clone()
        if t.numel() != n:
            raise ValueError(f"target has {t.numel()} entries; expected 1 or one per example ({n}).")
    else:
        raise ValueError(f"target={target!r} is invalid: give an int, a tensor of class indices or None.")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise ValueError(f"target class {bad} is outside the label set: allowed classes are 0..{num_classes - 1}.")
    return t


def check_finite_scores(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> None:
    """Raise ``ValueError`` when the model's clean scores hold NaN or inf: attack results would be meaningless."""
    dev = model_device(model)
    with torch.no_grad():
        bad = torch.cat([(~torch.isfinite(model(x[i : i + batch_size].to(dev)))).flatten(1).any(1).cpu()
                         for i in range(0, len(x), batch_size)])
    if bad.any():
        raise ValueError(f"the model outputs NaN or inf scores for {int(bad.sum())} of {len(x)} inputs (first: example "
                         f"{int(bad.nonzero()[0])}); its weights are broken (diverged training?), so attack results and "
                         "accuracies would be meaningless.")


# -- the native attack core ----------------------------------------------------------------------


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps
    else:
        direction = torch.randn(x.shape, generator=gen).to(x.device)
        radius = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=gen).to(x.device) * eps
        noise = direction / (_flat_norm(direction) + _TINY) * radius
    return (x + noise).clamp(0, 1)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
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


def _succeeded(pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return pred == target if target is not None else pred != y


def _iterate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    attack: str,
    eps: float,
    steps: int,
    norm: str,
    objective: str,
    alpha: float,
    start: torch.Tensor,
    record: bool,
    early_stop: bool,
    amp: str = "none",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, ...]] | None]:
    """One run of an iterative attack. Returns (best x, best loss, best success, frames or None).

    Each iterate is scored in the same forward pass that gives the gradient for the next step
    (``steps + 1`` forwards and ``steps`` backwards in all). With ``early_stop`` an example leaves the
    active batch once it succeeds (its successful iterate is kept): the result is the same and most
    of the work at large eps is saved.
    """
    best_x = start.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    best_succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    frames: list[tuple[torch.Tensor, ...]] | None = [] if record else None
    active = torch.arange(x.shape[0], device=x.device)
    x_cur = start.clone()
    momentum = torch.zeros_like(x) if attack == "mim" else None
    for t in range(steps + 1):
        last = t == steps
        xa = x_cur[active].detach().requires_grad_(not last)
        ya = y[active]
        ta = target[active] if target is not None else None
        with torch.set_grad_enabled(not last):
            loss, z, s = attack_objective(model, xa, ya, objective, ta, amp)
        if t > 0:  # the candidates are the iterates after each step (not the clean / random start point)
            with torch.no_grad():
                succ = _succeeded(s.argmax(1), ya, ta)
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
        x_cur[active] = _project(xa.detach() + alpha * _step_direction(grad, norm), x[active], eps, norm)
    return best_x, best_loss, best_succ, frames


def native_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    eps: float,
    steps: int,
    norm: str,
    objective: str,
    target: torch.Tensor | None,
    step_size: float | None,
    random_start: bool,
    restarts: int,
    record: bool,
    seed: int,
    early_stop: bool = False,
    amp: str = "none",
) -> AttackResult:
    """FGSM / PGD / BIM / MIM on a model already in eval mode; arguments already validated.

    FGSM is one step of size eps from the clean input (``steps``, ``random_start`` and ``restarts``
    are ignored); BIM and MIM start from the clean input and do not restart.
    """
    dev = model_device(model)
    x = x.detach().to(dev, torch.float32)
    y = y.to(dev)
    tgt = target.to(dev) if target is not None else None
    if attack == "fgsm":
        steps, restarts, random_start, alpha = 1, 1, False, eps
    else:
        alpha = step_size if step_size is not None else STEP_FACTOR * eps / steps
        if attack in ("bim", "mim"):
            restarts, random_start = 1, False
    gen = torch.Generator().manual_seed(int(seed))
    fast = attack_copy(model)  # same function, faster gradients
    z0 = s0 = None
    if record:  # frame 0 of the trajectory: the clean input
        with torch.no_grad():
            z0 = fast.embed(x)
            s0 = fast.scores_from_latent(z0)
    best_x = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    best_succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    chosen = torch.full((x.shape[0],), -1, dtype=torch.long)
    runs: list[list[tuple[torch.Tensor, ...]]] = []
    for r in range(restarts):
        start = _random_start(x, eps, norm, gen) if random_start and eps > 0 else x.clone()
        rx, rloss, rsucc, frames = _iterate(fast, x, y, tgt, attack, eps, steps, norm, objective, alpha, start,
                                            record, early_stop, amp)
        better = (rsucc & ~best_succ) | ((rsucc == best_succ) & (rloss > best_loss))
        best_x[better] = rx[better]
        best_loss[better] = rloss[better]
        best_succ[better] = rsucc[better]
        chosen[better.cpu()] = r
        if frames is not None:
            runs.append(frames)
    with torch.no_grad():  # the verdict comes from the model itself, not from its fast copy
        pred = model(best_x).argmax(1)
    success = _succeeded(pred, y, tgt)
    trajectory = None
    if record and z0 is not None and s0 is not None:
        trajectory = _build_trajectory(x.cpu(), z0.cpu(), s0.cpu(), runs, chosen)
    return AttackResult(best_x.cpu(), pred.cpu(), success.cpu(), trajectory)


def _build_trajectory(
    x0: torch.Tensor, z0: torch.Tensor, s0: torch.Tensor, runs: list[list[tuple[torch.Tensor, ...]]], chosen: torch.Tensor
) -> Trajectory:
    """Stack the frames; per example, use the restart whose result was kept (restart 0 if none improved)."""
    stacked = [[torch.stack([f[i] for f in frames]) for i in range(3)] for frames in runs]
    pick = chosen.clamp(min=0)
    xs, zs, ss = (torch.stack([run[i] for run in stacked]) for i in range(3))  # (R, T, N, ...)
    n = x0.shape[0]
    ar = torch.arange(n)
    xs, zs, ss = xs[pick, :, ar].transpose(0, 1), zs[pick, :, ar].transpose(0, 1), ss[pick, :, ar].transpose(0, 1)
    x = torch.cat([x0[None], xs])
    z = torch.cat([z0[None], zs])
    scores = torch.cat([s0[None], ss])
    return Trajectory(x=x, z=z, scores=scores, pred=scores.argmax(-1), steps=list(range(x.shape[0])))


# -- public entry points -----------------------------------------------------------------------


def run_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str = "pgd",
    eps: float = 0.1,
    steps: int = 20,
    norm: str = "linf",
    objective: str = "ce",
    target: int | torch.Tensor | None = None,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    record: bool = False,
    seed: int = 0,
    amp: str = "none",
) -> AttackResult:
    """Attack a batch and return adversarial inputs, predictions, success and (``record=True``) the trajectory.

    Args:
        model: a ``LatentClassifier`` (``model(x)`` scores, ``embed``, ``scores_from_latent``); its
            train/eval mode is restored afterwards, the attack itself runs in eval mode.
        x, y: inputs (N, C, H, W) in [0, 1] and true labels (N,). Always the true labels, never predictions.
        attack: one of ``ATTACKS``. ART-backed attacks (cw, deepfool, apgd-ce, apgd-dlr, square) record
            only the clean and final frames; cw and deepfool are minimal-perturbation (L2) attacks
            whose result is not clipped to eps; ``objective`` only applies to native attacks.
        eps: radius of the threat ball (>= 0), in [0, 1] pixel units for L-inf, Euclidean for L2.
        steps: iterations (>= 1); default step size ``2.5 * eps / steps``.
        norm: ``linf`` or ``l2``.
        objective: ``ce``, ``margin``, ``dlr`` or ``latent`` (see module docstring).
        target: class index (int or (N,) tensor) for a targeted attack, None for untargeted.
        random_start, restarts: PGD only; the per-example best restart is kept.
        record: return a ``Trajectory`` (frame 0 = clean input, frame t = iterate after step t).
        seed: seeds the random start (and ART's randomness), so results are reproducible.
        amp: ``none`` (float32) or ``bf16``: native attacks compute their gradients under bfloat16
            autocast (about 2x faster on CPUs with AMX and on GPUs; recorded frames come from that
            forward). The returned predictions and success always come from a float32 forward.

    Returns:
        ``AttackResult`` with all tensors on CPU.
    """
    check_attack_args(attack, eps, steps, norm, objective, restarts, step_size, amp)
    check_int("seed", seed, 0)
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (N, C, H, W); got {getattr(x, 'shape', type(x).__name__)}.")
    num_classes = int(getattr(model, "num_classes", 0)) or int(model(x[:1].to(model_device(model))).shape[1])
    y = check_labels(y, x.shape[0], num_classes)
    tgt = resolve_target(target, x.shape[0], num_classes)
    with eval_mode(model):
        check_finite_scores(model, x)
        if attack in NATIVE_ATTACKS:
            return native_attack(model, x, y, attack, eps, steps, norm, objective, tgt, step_size, random_start,
                                 restarts, record, seed, amp=amp)
        from .art_adapter import art_attack

        return art_attack(model, x, y, attack, eps=eps, steps=steps, norm=norm, target=tgt, step_size=step_size,
                          restarts=restarts, record=record, seed=seed)


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
    """Untargeted L-inf PGD (Madry et al. 2018) used by adversarial training; returns the last iterate.

    The model's mode is untouched (the training loop sets eval itself). Gradients are taken with
    ``torch.autograd.grad`` w.r.t. the input only, so parameter ``.grad`` stays as it was.
    """
    check_number("eps", eps, 0.0)
    check_int("steps", steps, 1)
    check_choice("objective", objective, OBJECTIVES)
    alpha = step_size if step_size is not None else STEP_FACTOR * eps / steps
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1
        x_adv = (x + eps * noise).clamp(0, 1)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss, _, _ = attack_objective(model, x_adv, y, objective)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()

"""Native attacks, batched PyTorch on any device, on one loop: FGSM, PGD, BIM, MIM (and PGD for training).

* ``fgsm``: one signed-gradient step of size eps (Goodfellow et al. 2015); L2: one normalised step.
* ``pgd``: projected gradient descent (Madry et al. 2018) with random start and restarts.
* ``bim``: basic iterative method (Kurakin et al. 2017): PGD from the clean input, no restarts.
* ``mim``: momentum iterative method (Dong et al. 2018), decay ``MIM_DECAY``, from the clean input.

Iterative attacks keep, per example, the best iterate (a successful one if any step succeeded), as
AutoAttack does, so a late step that undoes a success does not count as a failure. Restarts run as one
batch (``restarts x N`` rows); with early exit an example stops being attacked once the model confirms a
success (the rule is in ``_iterate``). No step does Python work per example.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models import LatentClassifier, attack_copy, model_device
from ..validation import check_choice, check_int, check_number
from .objectives import attack_objective
from .types import _TINY, MIM_DECAY, OBJECTIVES, STEP_FACTOR, AttackResult, AttackSpec, Trajectory, succeeded

Frames = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
MAX_RESTART_ROWS = 2048
"""Batched restarts stack at most this many rows (or one restart, if N is larger), to bound the memory."""


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


Confirm = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""``confirm(x, y, target) -> (n,) bool``: whether the model itself (not its fast copy) calls ``x`` a success."""


def _iterate(
    model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, spec: AttackSpec,
    alpha: float, start: torch.Tensor, record: bool = False, early_stop: bool = False, keep_best: bool = True,
    confirm: Confirm | None = None, group: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Frames | None]:
    """The one gradient loop. Returns (best x, best loss, best success, frames or None).

    Each iterate is scored in the same forward pass that gives the gradient for the next step
    (``steps + 1`` forwards and ``steps`` backwards in all). ``keep_best=False`` (adversarial training)
    skips the scoring and the last forward and returns the last iterate (loss and success are then not
    computed). Rows are independent examples (eval mode); batched restarts stack ``R`` copies of ``group``
    examples.

    Early exit (``early_stop``), the rule: an example whose best iterate is a success, *confirmed by*
    ``confirm`` (the model itself, so a fast copy's or bf16's rounding can never decide it alone), leaves
    the active batch: it is not updated any more and its successful iterate is its result; with batched
    restarts every copy of that example leaves. Examples that are not broken run the same steps as
    without early exit (rows are independent; only the float rounding of a smaller batch can differ), so
    the set of broken examples is unchanged; what differs is *which* successful iterate a broken example
    returns: the first confirmed one instead of the highest-loss one of the whole budget. With
    ``record`` a frozen example's frames repeat its successful iterate (it stops moving once fooled).
    """
    n = x.shape[0]
    best_x = start.clone()
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    best_succ = torch.zeros(n, dtype=torch.bool, device=x.device)
    frames: Frames | None = [] if record else None
    active: torch.Tensor | None = None  # None: every row is active (no index copies)
    x_cur = start
    z_all = s_all = None  # the last frame's latents and scores of every row (kept for frozen rows)
    momentum = torch.zeros_like(x) if spec.attack == "mim" else None
    for t in range(spec.steps + 1):
        last = t == spec.steps
        if last and not keep_best:
            return x_cur.detach(), best_loss, best_succ, None
        full = active is None
        xa = (x_cur if full else x_cur[active]).detach().requires_grad_(not last)
        ya = y if full else y[active]
        ta = None if target is None else target if full else target[active]
        with torch.set_grad_enabled(not last):
            loss, z, s = attack_objective(model, xa, ya, spec.objective, ta, spec.amp)
        if t > 0 and keep_best:  # the candidates are the iterates after each step (not the start point)
            with torch.no_grad():
                loss_d = loss.detach()
                succ = succeeded(s.argmax(1), ya, ta)
                b_succ = best_succ if full else best_succ[active]
                b_loss = best_loss if full else best_loss[active]
                better = (succ & ~b_succ) | ((succ == b_succ) & (loss_d > b_loss))
                if full:
                    best_x = torch.where(better.view(-1, *[1] * (x.dim() - 1)), xa.detach(), best_x)
                    best_loss = torch.where(better, loss_d, best_loss)
                    best_succ = best_succ | (better & succ)
                else:
                    idx = active[better]
                    best_x[idx] = xa.detach()[better]
                    best_loss[idx] = loss_d[better]
                    best_succ[idx] = succ[better]
                if frames is not None:
                    if full:
                        z_all, s_all = z.detach(), s.detach()
                    else:
                        z_all = z_all.index_copy(0, active, z.detach())  # type: ignore[union-attr]
                        s_all = s_all.index_copy(0, active, s.detach())  # type: ignore[union-attr]
                    frames.append((x_cur.detach().cpu(), z_all.cpu(), s_all.cpu()))  # type: ignore[union-attr]
        if last:
            break
        (grad,) = torch.autograd.grad(loss.sum(), xa)
        rows = torch.arange(n, device=x.device) if full else active
        if early_stop and keep_best:
            keep = _still_open(best_x, best_succ, rows, y, target, confirm, group)
            if keep is not None:
                rows, xa, grad = rows[keep], xa[keep], grad[keep]
                active = rows
                if rows.numel() == 0:
                    break
        full = active is None
        if momentum is not None:
            prev = momentum if full else momentum[rows]
            g = prev * MIM_DECAY + grad / (grad.abs().flatten(1).sum(1).view(-1, 1, 1, 1) + _TINY)
            momentum = g if full else momentum.index_copy(0, rows, g)
            grad = g
        x_new = project(xa.detach() + alpha * _step_direction(grad, spec.norm), x if full else x[rows], spec.eps, spec.norm)
        x_cur = x_new if full else x_cur.index_copy(0, rows, x_new)  # out of place: recorded frames stay intact
    return best_x, best_loss, best_succ, frames


def _still_open(best_x: torch.Tensor, best_succ: torch.Tensor, rows: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None, confirm: Confirm | None, group: int | None) -> torch.Tensor | None:
    """Mask over ``rows`` of the examples that stay active, or None when all stay (see ``_iterate``'s rule)."""
    cand = rows[best_succ[rows]]
    if cand.numel() == 0:
        return None
    if confirm is not None:
        ok = confirm(best_x[cand], y[cand], None if target is None else target[cand])
        cand = cand[ok]  # the others keep attacking, exactly as without early exit
        if cand.numel() == 0:
            return None
    done = torch.zeros(best_succ.shape[0], dtype=torch.bool, device=best_succ.device)
    done[cand] = True
    if group is not None and best_succ.shape[0] > group:  # batched restarts: a broken example leaves in every copy
        done = done.view(-1, group).any(0).repeat(best_succ.shape[0] // group)
    keep = ~done[rows]
    return None if bool(keep.all()) else keep


def native_attack(
    model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, target: torch.Tensor | None = None,
    record: bool = False, early_stop: bool = False, batch_restarts: bool = True,
) -> AttackResult:
    """FGSM / PGD / BIM / MIM on a model already in eval mode, labels and target already checked.

    FGSM is one step of size eps from the clean input (``steps``, ``random_start`` and ``restarts``
    are ignored); BIM and MIM start from the clean input and do not restart. PGD's restarts run as one
    batch of ``restarts x N`` rows (``batch_restarts``; at most ``MAX_RESTART_ROWS`` rows, so large
    batches take a few restarts at a time); the random starts are drawn in the same order as one restart
    after another, and the per-example choice between restarts is the same. ``early_stop``:
    see ``_iterate`` (an example broken in any restart stops being attacked).
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
    confirm = None if fast is model else _confirmer(model)
    z0 = s0 = None
    if record:  # frame 0 of the trajectory: the clean input
        with torch.no_grad():
            z0 = fast.embed(x)
            s0 = fast.scores_from_latent(z0)
    n, reps = x.shape[0], spec.restarts
    starts = [_random_start(x, spec.eps, spec.norm, gen) if spec.random_start and spec.eps > 0 else x
              for _ in range(reps)]  # drawn in restart order: the same starts as restarts run one by one
    per_run: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    runs: list[Frames] = []
    per_batch = max(1, min(reps, MAX_RESTART_ROWS // max(1, n))) if batch_restarts else 1
    for first in range(0, reps, per_batch):  # restarts in batches of at most MAX_RESTART_ROWS rows
        k = min(per_batch, reps - first)

        def rep(t: torch.Tensor | None, k: int = k) -> torch.Tensor | None:
            return t if k == 1 or t is None else t.repeat(k, *[1] * (t.dim() - 1))

        start = torch.cat(starts[first : first + k]) if k > 1 else starts[first].clone()
        rx, rloss, rsucc, frames = _iterate(fast, rep(x), rep(y), rep(tgt), spec, alpha, start,  # type: ignore[arg-type]
                                            record, early_stop, confirm=confirm, group=n)
        for r in range(k):
            part = slice(r * n, (r + 1) * n)
            per_run.append((rx[part], rloss[part], rsucc[part]))
            if frames is not None:
                runs.append([(fx[part], fz[part], fs[part]) for fx, fz, fs in frames])
    best_x = x.clone()
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    best_succ = torch.zeros(n, dtype=torch.bool, device=x.device)
    chosen = torch.full((n,), -1, dtype=torch.long)
    for r, (rx, rloss, rsucc) in enumerate(per_run):  # a loop over restarts (a handful), vectorised over examples
        better = (rsucc & ~best_succ) | ((rsucc == best_succ) & (rloss > best_loss))
        best_x[better] = rx[better]
        best_loss[better] = rloss[better]
        best_succ[better] = rsucc[better]
        chosen[better.cpu()] = r
    with torch.no_grad():  # the verdict comes from the model itself, not from its fast copy
        pred = model(best_x).argmax(1)
    success = succeeded(pred, y, tgt)
    trajectory = None
    if record and z0 is not None and s0 is not None:
        trajectory = _build_trajectory(x.cpu(), z0.cpu(), s0.cpu(), runs, chosen)
    return AttackResult(best_x.cpu(), pred.cpu(), success.cpu(), trajectory)


def _confirmer(model: LatentClassifier) -> Confirm:
    """``confirm`` for early exit: success judged by ``model`` itself, in float32."""

    @torch.no_grad()
    def confirm(xs: torch.Tensor, ys: torch.Tensor, ts: torch.Tensor | None) -> torch.Tensor:
        return succeeded(model(xs).argmax(1), ys, ts)

    return confirm


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


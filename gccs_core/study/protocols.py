"""The study's two evaluation protocols, the Carlini checks and the per-model diagnostics.

* **weak** (what a 2020 paper typically ran): FGSM-CE, PGD-40-CE from the clean input, MIM-CE (10
  steps of eps/10), PGD-40-CE targeted to a random wrong label, Carlini-Wagner L2 with ART's defaults
  (counted at L-inf eps when its perturbation fits in the ball) and Square on the *softmax* of the
  scores (a score-based black box seeing probabilities, as cleverhans/foolbox-era code did).
* **strong**: the per-example worst case over PGD-margin and PGD-DLR (``steps`` x ``restarts``),
  PGD-latent (prototype models), APGD-CE and APGD-DLR (ART, ``steps`` iterations), targeted PGD-margin
  toward the 3 nearest wrong classes (vertices), a transfer attack from the cross-entropy twin of the
  same seed, and Square (margin) on the survivors. Attacks run as a cascade on the survivors of the
  previous ones (AutoAttack's order of work): the worst case is the same, the cost far lower.

Both protocols return, per eps, a per-example correctness vector over the chunk (clean-wrong examples
count as broken), and per attack the examples it was the first to break.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gccs_core.attacks import margin_loss, run_attack

BATCH = 250
Progress = Callable[[str], None]


def _noop(_: str) -> None:
    return None


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


def _attack_pred(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
                 target_all: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
    """Predictions on the adversarial inputs of one ``run_attack`` setting, batched (``target_all``: per-example targets).

    Native attacks stop on an example once the model confirms a successful iterate (``early_exit``; ART's
    decide their own stopping): the set of broken examples is that of the full budget
    (tests/test_attacks_speed.py), only the time is shorter.
    """
    out = [torch.zeros(0, dtype=torch.long)]
    for i in range(0, len(x), BATCH):
        extra = {"target": target_all[i : i + BATCH]} if target_all is not None else {}
        out.append(run_attack(model, x[i : i + BATCH], y[i : i + BATCH], seed=seed + i, early_exit=True, **kw,
                              **extra).pred)
    return torch.cat(out)


def _attack_x(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, **kw: Any) -> torch.Tensor:
    out = [run_attack(model, x[i : i + BATCH], y[i : i + BATCH], seed=seed + i, **kw).x_adv for i in range(0, len(x), BATCH)]
    return torch.cat(out) if out else x.clone()


def random_wrong_labels(y: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (y + torch.randint(1, k, y.shape, generator=g)) % k


def nearest_wrong_classes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
    """(N, m) the ``m`` wrong classes nearest to the clean input: nearest vertices for prototype models
    (latent distance to the centres), highest wrong scores otherwise."""
    with torch.no_grad():
        z = torch.cat([model.embed(x[i : i + 500]) for i in range(0, len(x), 500)])
        centers = model.centers
        s = -torch.cdist(z, centers) if centers is not None else model.scores_from_latent(z)
    s = s.clone()
    s.scatter_(1, y[:, None], float("-inf"))
    return s.topk(min(m, s.shape[1] - 1), dim=1).indices


def softmax_square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, queries: int, seed: int) -> torch.Tensor:
    """Predictions after ART's Square attack on the softmax probabilities (its default margin loss on them)."""
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import PyTorchClassifier

    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long)
    k = int(model.num_classes)
    clf = PyTorchClassifier(model=nn.Sequential(model, nn.Softmax(dim=1)), loss=nn.CrossEntropyLoss(),
                            input_shape=tuple(x.shape[1:]), nb_classes=k, clip_values=(0.0, 1.0), device_type="cpu")
    atk = SquareAttack(clf, norm=np.inf, eps=eps, max_iter=queries, p_init=0.8, nb_restarts=1, batch_size=BATCH,
                       verbose=False)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        x_adv = torch.from_numpy(atk.generate(x=x.numpy(), y=np.eye(k, dtype=np.float32)[y.numpy()]).astype(np.float32))
    finally:
        np.random.set_state(state)
    model.eval()
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return predict(model, x_adv)


def weak_protocol(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list: list[float], steps: int = 40,
                  mim_steps: int = 10, cw_steps: int = 10, square_queries: int = 1000, seed: int = 0,
                  progress: Progress = _noop) -> dict[str, Any]:
    """The 2020-style protocol (see the module docstring): per eps, per-example correctness after every attack.

    Run as a cascade, cheapest first: each attack sees only the examples the earlier ones left correct,
    so the per-example result (robust unless some attack breaks it) is that of running every attack on
    every example, at a fraction of the cost. Carlini-Wagner does not depend on eps; it runs once, last,
    on the union of every eps's survivors, and counts at an eps where its perturbation fits the ball.
    """
    k = int(model.num_classes)
    correct = predict(model, x) == y
    idx = torch.nonzero(correct).squeeze(1)
    xc, yc = x[idx], y[idx]
    targets = random_wrong_labels(yc, k, seed)
    attacks = ["fgsm-ce", "pgd40-ce", "mim-ce", "pgd40-ce-targeted", "square-softmax", "cw-l2"]
    gradient = {
        "fgsm-ce": dict(attack="fgsm", objective="ce"),
        "pgd40-ce": dict(attack="pgd", steps=steps, objective="ce", random_start=False),
        "mim-ce": dict(attack="mim", steps=mim_steps, objective="ce"),
        "pgd40-ce-targeted": dict(attack="pgd", steps=steps, objective="ce", random_start=False),
    }
    firsts: dict[float, torch.Tensor] = {}
    for eps in eps_list:
        first = torch.full((len(idx),), -1, dtype=torch.long)
        progress(f"eps {eps:g}")
        for ai, name in enumerate(attacks[:4]):
            todo = torch.nonzero(first < 0).squeeze(1)
            if len(todo) == 0:
                break
            kw: dict[str, Any] = dict(gradient[name], eps=eps)
            if name == "mim-ce":
                kw["step_size"] = eps / mim_steps
            if name == "pgd40-ce-targeted":
                kw["target_all"] = targets[todo]
            pred = _attack_pred(model, xc[todo], yc[todo], seed, **kw)
            first[todo[pred != yc[todo]]] = ai
        todo = torch.nonzero(first < 0).squeeze(1)
        if len(todo):
            hit = softmax_square(model, xc[todo], yc[todo], eps, square_queries, seed) != yc[todo]
            first[todo[hit]] = attacks.index("square-softmax")
        firsts[eps] = first
    alive = torch.zeros(len(idx), dtype=torch.bool)
    for first in firsts.values():
        alive |= first < 0
    todo = torch.nonzero(alive).squeeze(1)
    progress(f"cw-l2 on {len(todo)}")
    cw_broken = torch.zeros(len(idx), dtype=torch.bool)
    cw_linf = torch.full((len(idx),), math.inf)
    if len(todo):
        x_cw = _attack_x(model, xc[todo], yc[todo], seed, attack="cw", eps=0.0, steps=cw_steps, norm="l2")
        cw_broken[todo] = predict(model, x_cw) != yc[todo]
        cw_linf[todo] = (x_cw - xc[todo]).flatten(1).abs().amax(1)
    out: dict[str, Any] = {"clean": correct.tolist(), "attacks": attacks, "eps": {}}
    for eps, first in firsts.items():
        first[(first < 0) & cw_broken & (cw_linf <= eps + 1e-6)] = attacks.index("cw-l2")
        out["eps"][f"{eps:g}"] = _eps_record(correct, idx, first, attacks)
    return out


def _eps_record(correct: torch.Tensor, idx: torch.Tensor, first: torch.Tensor, attacks: list[str]) -> dict[str, Any]:
    """Per-example robust vector and, per attack, how many examples it broke first (and alone, standalone)."""
    robust = correct.clone()
    robust[idx] = first < 0
    breaks = {name: int((first == ai).sum()) for ai, name in enumerate(attacks)}
    return {"robust": robust.tolist(), "first_break": breaks}


def _restarted(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, alive: torch.Tensor, restarts: int, seed: int,
               **kw: Any) -> torch.Tensor:
    """Run an attack ``restarts`` times (fresh random start each) on the survivors; returns the broken mask."""
    broken = torch.zeros(len(xs), dtype=torch.bool)
    for r in range(restarts):
        todo = torch.nonzero(alive & ~broken).squeeze(1)
        if len(todo) == 0:
            break
        tgt = kw.get("target_all")
        rest = {**kw, "target_all": tgt[todo]} if tgt is not None else kw
        pred = _attack_pred(model, xs[todo], ys[todo], seed + 7919 * r, **rest)
        hit = pred != ys[todo]
        broken[todo[hit]] = True
    return broken


def strong_protocol(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list: list[float], steps: int = 100,
                    restarts: int = 5, square_queries: int = 1000, twin: nn.Module | None = None, seed: int = 0,
                    progress: Progress = _noop, done: dict[str, Any] | None = None,
                    on_eps: Callable[[str, dict[str, Any]], None] | None = None, amp: str = "none") -> dict[str, Any]:
    """The adaptive protocol (see the module docstring), as a cascade on survivors, per eps.

    Every radius is computed on its own (its attacks draw their random starts from ``seed`` and the batch
    position, not from what an earlier radius consumed), so a long run can stop between radii: ``done`` holds
    the records (``out["eps"][...]``) of radii already finished, which are taken as they are, and ``on_eps`` is
    called with each newly finished radius's key and record (the study saves it, so a killed job resumes there).
    ``amp='bf16'`` runs every attack's encoder passes under bfloat16 autocast (``gccs_core.attacks.types.AMP``);
    the verdicts stay float32. The study itself runs float32 (``amp='none'``); bf16 is the fast option whose
    agreement with float32 ``bench/bench_strong_suite.py --amp bf16`` measures.
    """
    correct = predict(model, x) == y
    idx = torch.nonzero(correct).squeeze(1)
    xc, yc = x[idx], y[idx]
    has_centres = getattr(model, "centers", None) is not None
    near = nearest_wrong_classes(model, xc, yc, 3) if len(xc) else torch.zeros(0, 3, dtype=torch.long)
    plan: list[tuple[str, Callable[[torch.Tensor, float], torch.Tensor]]] = []

    def native(label: str, reps: int, **kw: Any) -> None:
        plan.append((label, lambda alive, eps: _restarted(model, xc, yc, alive, reps, seed, eps=eps, amp=amp, **kw)))

    native("pgd-margin-20", 1, attack="pgd", steps=min(20, steps), objective="margin")
    native("pgd-margin", restarts, attack="pgd", steps=steps, objective="margin")
    native("pgd-dlr", restarts, attack="pgd", steps=steps, objective="dlr")
    if has_centres:
        native("pgd-latent", 1, attack="pgd", steps=steps, objective="latent")
    native("apgd-ce", 1, attack="apgd-ce", steps=steps)
    native("apgd-dlr", 1, attack="apgd-dlr", steps=steps)

    def targeted(alive: torch.Tensor, eps: float) -> torch.Tensor:
        broken = torch.zeros(len(xc), dtype=torch.bool)
        for j in range(near.shape[1]):
            broken |= _restarted(model, xc, yc, alive & ~broken, 1, seed + j, attack="pgd", eps=eps, steps=steps,
                                 objective="margin", target_all=near[:, j], amp=amp)
        return broken

    plan.append(("pgd-margin-targeted-3", targeted))
    if twin is not None:
        def transfer(alive: torch.Tensor, eps: float) -> torch.Tensor:
            todo = torch.nonzero(alive).squeeze(1)
            broken = torch.zeros(len(xc), dtype=torch.bool)
            if len(todo):
                x_adv = _attack_x(twin, xc[todo], yc[todo], seed, attack="pgd", eps=eps, steps=steps, objective="margin",
                                  amp=amp)
                broken[todo] = predict(model, x_adv) != yc[todo]
            return broken

        plan.append(("transfer-ce-twin", transfer))
    plan.append(("square", lambda alive, eps: _restarted(model, xc, yc, alive, 1, seed, attack="square", eps=eps,
                                                         steps=square_queries, amp=amp)))
    attacks = [label for label, _ in plan]
    out: dict[str, Any] = {"clean": correct.tolist(), "attacks": attacks, "eps": {}}
    for eps in eps_list:
        key = f"{eps:g}"
        if done and key in done:
            out["eps"][key] = done[key]
            continue
        first = torch.full((len(idx),), -1, dtype=torch.long)
        for ai, (label, fn) in enumerate(plan):
            alive = first < 0
            if not bool(alive.any()) or eps == 0:
                break
            progress(f"eps {eps:g} {label} on {int(alive.sum())}")
            first[(first < 0) & fn(alive, eps)] = ai
        out["eps"][key] = _eps_record(correct, idx, first, attacks)
        if on_eps is not None:
            on_eps(key, out["eps"][key])
    return out


def strong_protocol_unordered(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100,
                              restarts: int = 5, square_queries: int = 1000, twin: nn.Module | None = None,
                              seed: int = 0, amp: str = "none") -> torch.Tensor:
    """The strong protocol's attacks, each run on every clean-correct example (no cascade): the robust mask over
    ``x`` at ``eps``. The reference the cascade of ``strong_protocol`` is checked against (same seeds, same
    per-position random starts); several times slower, so only for checks on small subsets."""
    correct = predict(model, x) == y
    idx = torch.nonzero(correct).squeeze(1)
    xc, yc = x[idx], y[idx]
    everyone = torch.ones(len(idx), dtype=torch.bool)
    near = nearest_wrong_classes(model, xc, yc, 3)

    def run(reps: int, s: int = seed, **kw: Any) -> torch.Tensor:
        return _restarted(model, xc, yc, everyone, reps, s, eps=eps, amp=amp, **kw)

    broken = [run(1, attack="pgd", steps=min(20, steps), objective="margin"),
              run(restarts, attack="pgd", steps=steps, objective="margin"),
              run(restarts, attack="pgd", steps=steps, objective="dlr")]
    if getattr(model, "centers", None) is not None:
        broken.append(run(1, attack="pgd", steps=steps, objective="latent"))
    broken += [run(1, attack="apgd-ce", steps=steps), run(1, attack="apgd-dlr", steps=steps)]
    broken += [run(1, seed + j, attack="pgd", steps=steps, objective="margin", target_all=near[:, j]) for j in range(3)]
    if twin is not None:
        x_adv = _attack_x(twin, xc, yc, seed, attack="pgd", eps=eps, steps=steps, objective="margin", amp=amp)
        broken.append(predict(model, x_adv) != yc)
    broken.append(run(1, attack="square", steps=square_queries))
    robust = correct.clone()
    robust[idx] = ~torch.stack(broken).any(0)
    return robust


def iterations_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, budgets: list[int],
                     seed: int = 0) -> dict[str, Any]:
    """Carlini et al.'s convergence check: PGD-margin accuracy (1 random start) against the iteration budget."""
    correct = predict(model, x) == y
    idx = torch.nonzero(correct).squeeze(1)
    out = {}
    for b in budgets:
        pred = _attack_pred(model, x[idx], y[idx], seed, attack="pgd", eps=eps, steps=b, objective="margin")
        out[str(b)] = float(int((pred == y[idx]).sum()) / len(y))
    return {"eps": eps, "robust_by_steps": out, "n": len(y), "clean": float(correct.float().mean())}


def diagnostics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list: list[float], noise_draws: int,
                seed: int = 0) -> dict[str, Any]:
    """Zero-gradient fraction, clean margin, input-gradient norm of the margin, their ratio, and the noise baseline.

    The first-order input-space radius of an example is ``margin / ||grad_x margin||_dual``: the L-inf
    radius uses the L1 norm of the gradient, the L2 radius the L2 norm. A large latent margin with a
    large gradient gives a small radius, which is how latent geometry can fail to carry into input space.
    """
    zero, margins, g1, g2, lat = [], [], [], [], []
    centers = getattr(model, "centers", None)
    for i in range(0, len(x), BATCH):
        xb, yb = x[i : i + BATCH].clone().requires_grad_(True), y[i : i + BATCH]
        scores = model(xb)
        (g_ce,) = torch.autograd.grad(F.cross_entropy(scores, yb, reduction="sum"), xb, retain_graph=True)
        zero.append(g_ce.flatten(1).abs().amax(1) == 0)
        m = -margin_loss(scores, yb)  # s_y - max_{k != y} s_k: positive when correct
        (g_m,) = torch.autograd.grad(m.sum(), xb)
        margins.append(m.detach())
        g1.append(g_m.flatten(1).abs().sum(1))
        g2.append(g_m.flatten(1).norm(dim=1))
        if centers is not None:
            with torch.no_grad():
                z = model.embed(xb.detach())
                d2 = (z[:, None, :] - centers[None]).pow(2).sum(-1)  # (n, K)
                gap = (d2 - d2.gather(1, yb[:, None])) / (2 * (centers[None] - centers[yb][:, None]).norm(dim=-1) + 1e-12)
                gap.scatter_(1, yb[:, None], float("inf"))
                lat.append(gap.min(1).values)  # distance of z to the nearest bisecting hyperplane (signed)
    zero_t, m_t, g1_t, g2_t = torch.cat(zero), torch.cat(margins), torch.cat(g1), torch.cat(g2)
    ok = m_t > 0
    rad_inf = torch.where(g1_t > 0, m_t / g1_t.clamp(min=1e-30), torch.full_like(m_t, math.inf))[ok]
    rad_l2 = torch.where(g2_t > 0, m_t / g2_t.clamp(min=1e-30), torch.full_like(m_t, math.inf))[ok]
    out: dict[str, Any] = {
        "n": len(y),
        "zero_grad_fraction": float(zero_t.float().mean()),
        "score_margin_mean": float(m_t[ok].mean()) if ok.any() else None,
        "grad_margin_l1_mean": float(g1_t[ok].mean()) if ok.any() else None,
        "grad_margin_l2_mean": float(g2_t[ok].mean()) if ok.any() else None,
        "first_order_linf_radius_median": _finite_median(rad_inf),
        "first_order_l2_radius_median": _finite_median(rad_l2),
        "latent_margin_mean": float(torch.cat(lat)[ok].mean()) if lat and ok.any() else None,
        "noise": {},
    }
    g = torch.Generator().manual_seed(seed)
    for eps in eps_list:
        robust = predict(model, x) == y
        for _ in range(noise_draws):
            noise = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
            robust &= predict(model, (x + noise).clamp(0, 1)) == y
        out["noise"][f"{eps:g}"] = float(robust.float().mean())
    return out


def _finite_median(t: torch.Tensor) -> float | None:
    if len(t) == 0:
        return None
    v = float(t.median())
    return v if math.isfinite(v) else None
